#!/usr/bin/env bash
# On a CUDA machine, from the repository root: the GPU rows against transformers (bench/gpu.py), pretraining
# tokens/s (bench/pretrain.py --device cuda) and the tests that need CUDA (mixed precision, fused attention
# with dropout). Writes runs/gpu/report.md; copy its tables, with the GPU's name and date, into
# bench/results.md. `make setup` and `bertkit fetch minilm mr` first.
#   bash bench/gpu.sh            (about 10 minutes on one recent GPU)
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
{
  echo "## GPU"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo
  "$PY" bench/gpu.py --device cuda
  echo
  "$PY" bench/pretrain.py --device cuda --sizes minilm,base --steps 20 --warmup 3
  echo
  echo "CUDA tests:"
  "$PY" -m pytest -q tests/test_cuda.py tests/test_finetune.py tests/test_model.py -k "cuda or gpu or fp16 or bf16 or dropout" 2>&1 | tail -3 || true
} | tee "$OUT/report.md"

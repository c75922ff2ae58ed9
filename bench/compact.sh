#!/usr/bin/env bash
# The compact-model table on MR sentiment: a MiniLM-L6 teacher fine-tuned with configs/mr.yaml, and
# compact students (Turc et al. 2019 sizes) trained two ways with the same budget:
#   (a) fine-tuned directly from random init on the labels;
#   (b) distilled from random init: the labels, plus the teacher's outputs on train and on a seeded
#       sample of unlabelled transfer text (corpus-en, Wikipedia paragraphs);
#   (c) pre-trained with `bertkit pretrain` (MLM + NSP on corpus-en, PRETRAIN_STEPS steps of 32 x 128
#       tokens), then distilled as in (b): Turc et al.'s pre-trained distillation. Sizes in PRETRAIN_SIZES.
# And embedding students (EMBED_SIZES; mini by default): `bertkit distill --task embed` from MiniLM's
# sentence vectors on corpus-en and MR's training sentences, starting from the student arm (c)
# pre-trained (from random init where there is none).
# Each run is skipped when its test score exists, so the script can be stopped and started again.
#   bash bench/compact.sh      (SIZES="tiny mini" SEEDS=1 EPOCHS=3 LR=5e-4 UNLABELED=8000 OUT=runs/compact
#                               PRETRAIN_SIZES=mini PRETRAIN_STEPS=800)
# Then prints dev/test accuracy, parameters and fp32 encode speed against the teacher's.
set -euo pipefail
cd "$(dirname "$0")/.."
BERTKIT=${BERTKIT:-.venv/bin/bertkit}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/compact}
SIZES=${SIZES:-"tiny mini"}
SEEDS=${SEEDS:-1}
EPOCHS=${EPOCHS:-3}
LR=${LR:-5e-4}
UNLABELED=${UNLABELED:-8000}
PRETRAIN_SIZES=${PRETRAIN_SIZES:-mini}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-800}
EMBED_SIZES=${EMBED_SIZES:-mini}
mkdir -p "$OUT"

teacher=$OUT/teacher
if [ ! -f "$teacher/eval-mr-test.json" ]; then
  echo "== teacher: MiniLM-L6 fine-tuned on MR (configs/mr.yaml)"
  "$BERTKIT" finetune --config configs/mr.yaml --output "$teacher" --overwrite > "$teacher.log" 2>&1
  "$BERTKIT" evaluate --model "$teacher" --data mr:test > /dev/null
fi

# A random-init student of a preset size reads MiniLM's vocab: a directory with the vocab only.
vocab=$OUT/minilm-vocab
if [ ! -f "$vocab/vocab.txt" ]; then
  mkdir -p "$vocab"
  "$PY" -c "from bertkit.fetch import resolve_model; from bertkit.tokenizer import BertTokenizer; \
BertTokenizer.from_dir(resolve_model('minilm')).save('$vocab')"
fi

for size in $SIZES; do
  for seed in ${SEEDS//,/ }; do
    run=$OUT/$size-finetune-seed$seed
    if [ ! -f "$run/eval-mr-test.json" ]; then
      echo "== (a) $size, fine-tuned from random init, seed $seed"
      "$BERTKIT" finetune --task classify --model "$vocab" --init random --size "$size" --train mr:train \
        --dev mr:dev --output "$run" --overwrite --train.epochs "$EPOCHS" --train.lr "$LR" --train.seed "$seed" \
        --max-length 128 > "$run.log" 2>&1
      "$BERTKIT" evaluate --model "$run" --data mr:test > /dev/null
    fi
    run=$OUT/$size-distill-seed$seed
    if [ ! -f "$run/eval-mr-test.json" ]; then
      echo "== (b) $size, distilled from random init, seed $seed"
      # every size of one seed reads the same teacher outputs: the teacher labels them once
      "$BERTKIT" distill --teacher "$teacher" --student "$size" --train mr:train --unlabeled corpus-en \
        --unlabeled-examples "$UNLABELED" --dev mr:dev --output "$run" --overwrite --train.epochs "$EPOCHS" \
        --train.lr "$LR" --train.seed "$seed" --teacher-cache "$OUT/teacher-outputs-seed$seed" > "$run.log" 2>&1
      "$BERTKIT" evaluate --model "$run" --data mr:test > /dev/null
    fi
  done
done

for size in $PRETRAIN_SIZES; do
  data=$OUT/pretrain-data
  if [ ! -f "$data/index.json" ]; then
    echo "== pretraining data: corpus-en, MiniLM's vocab, whole-word masking, 2 passes"
    "$BERTKIT" pretrain-data --input corpus-en --vocab "$vocab" --output "$data" --dupe-factor 2 --overwrite \
      > "$data.log" 2>&1
  fi
  pretrained=$OUT/$size-pretrained
  if [ ! -f "$pretrained/metrics.json" ]; then
    echo "== $size pre-trained from random init, $PRETRAIN_STEPS steps"
    "$BERTKIT" pretrain --data "$data" --model-size "$size" --vocab "$vocab" --output "$pretrained" --overwrite \
      --train.max-steps "$PRETRAIN_STEPS" --train.lr 5e-4 --train.batch-size 32 --train.eval-every 500 \
      > "$pretrained.log" 2>&1
  fi
  for seed in ${SEEDS//,/ }; do
    run=$OUT/$size-pretrained-distill-seed$seed
    if [ ! -f "$run/eval-mr-test.json" ]; then
      echo "== (c) $size, pre-trained then distilled, seed $seed"
      "$BERTKIT" distill --teacher "$teacher" --student "$pretrained" --train mr:train --unlabeled corpus-en \
        --unlabeled-examples "$UNLABELED" --dev mr:dev --output "$run" --overwrite --train.epochs "$EPOCHS" \
        --train.lr "$LR" --train.seed "$seed" --teacher-cache "$OUT/teacher-outputs-seed$seed" > "$run.log" 2>&1
      "$BERTKIT" evaluate --model "$run" --data mr:test > /dev/null
    fi
  done
done

for size in $EMBED_SIZES; do
  start=$size
  [ -f "$OUT/$size-pretrained/metrics.json" ] && start=$OUT/$size-pretrained
  run=$OUT/embed-$size$([ "$start" = "$size" ] || echo -pretrained)
  if [ ! -f "$run/metrics.json" ]; then
    echo "== embedding student: $size from ${start/#$OUT\//}"
    "$BERTKIT" distill --task embed --teacher minilm --student "$start" --unlabeled corpus-en,mr:train \
      --unlabeled-examples 10000 --dev mr:dev --max-length 128 --output "$run" --overwrite \
      --train.epochs "$EPOCHS" --train.lr "$LR" --teacher-cache "$OUT/teacher-vectors" > "$run.log" 2>&1
  fi
done

"$PY" bench/compact.py --out "$OUT" --sizes "$SIZES"

"""A whole epoch of MR fine-tuning plus dev evaluation: bertkit against transformers' `Trainer`, the
same model (all-MiniLM-L6-v2), data, batch size, learning rate, warm-up and seed, wall time in one run.

    .venv/bin/python bench/epoch.py            (`make bench` runs it after bench/speed.py)

Rows: `bertkit finetune` (configs/mr.yaml with one epoch); `Trainer` with its defaults (padding to the
longest in each batch, shuffled order) and with `group_by_length=True` (batches of like lengths, where
the installed transformers offers it). Each runs in its own process; the time covers loading the model,
tokenizing, one epoch and the dev evaluation, as a user waits for it. A training step at equal shapes is
GEMM-bound in both libraries (bench/speed.py); a whole epoch shows what the data pipeline adds.
"""
from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = dict(batch_size=32, lr=5e-5, warmup=0.1, seed=42, max_length=128)


def run_bertkit(out: str) -> dict:
    start = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/bertkit"), "finetune", "--config", str(ROOT / "configs/mr.yaml"),
                    "--train.epochs=1", "--output", out, "--overwrite"], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "accuracy": json.loads((Path(out) / "metrics.json").read_text())["accuracy"]}


def run_trainer(out: str, group_by_length: bool) -> dict:
    start = time.perf_counter()
    import numpy as np
    import transformers

    from bertkit.data.readers import read_records
    from bertkit.fetch import resolve_data, resolve_model

    model_dir = str(resolve_model("minilm"))
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    labels = ["negative", "positive"]

    def dataset(split):
        rows = [r for _, r in read_records(resolve_data(f"mr:{split}"))]
        enc = tok([r["text"] for r in rows], truncation=True, max_length=RECIPE["max_length"])
        return [{"input_ids": ids, "attention_mask": m, "labels": labels.index(r["label"])}
                for ids, m, r in zip(enc["input_ids"], enc["attention_mask"], rows)]

    train, dev = dataset("train"), dataset("dev")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    options = dict(output_dir=out, per_device_train_batch_size=RECIPE["batch_size"],
                   per_device_eval_batch_size=RECIPE["batch_size"], learning_rate=RECIPE["lr"],
                   warmup_steps=RECIPE["warmup"], num_train_epochs=1, seed=RECIPE["seed"], save_strategy="no",
                   report_to=[], logging_strategy="no", disable_tqdm=True)
    if group_by_length:
        options["group_by_length"] = True
    trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(**options), train_dataset=train,
                                   data_collator=transformers.DataCollatorWithPadding(tok))
    trainer.train()
    logits = trainer.predict(dev).predictions
    accuracy = float((np.argmax(logits, -1) == np.array([d["labels"] for d in dev])).mean())
    return {"seconds": time.perf_counter() - start, "accuracy": accuracy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            kind = args.worker
            result = run_bertkit(tmp + "/run") if kind == "bertkit" else run_trainer(tmp, kind == "trainer-grouped")
        print(json.dumps(result))
        return
    import transformers

    sides = ["bertkit", "trainer"]
    if "group_by_length" in inspect.signature(transformers.TrainingArguments).parameters:
        sides.append("trainer-grouped")
    results = {}
    for side in sides:
        done = subprocess.run([sys.executable, __file__, "--worker", side], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
        print(side, results[side], file=sys.stderr)
    ours = results["bertkit"]
    print(f"One epoch of MR (8,458 sentences) plus dev evaluation, MiniLM, batch {RECIPE['batch_size']}, "
          f"lr {RECIPE['lr']:g}, warm-up {RECIPE['warmup']:g}, seed {RECIPE['seed']}; transformers "
          f"{transformers.__version__}, {time.strftime('%Y-%m-%d')}.\n")
    print("| run | wall time | dev accuracy | bertkit is |\n|---|---:|---:|---:|")
    names = {"bertkit": "bertkit finetune", "trainer": "Trainer, defaults",
             "trainer-grouped": "Trainer, group_by_length=True"}
    for side, r in results.items():
        ratio = "" if side == "bertkit" else f"**{r['seconds'] / ours['seconds']:.2f}x** faster"
        print(f"| {names[side]} | {r['seconds']:.0f} s | {r['accuracy']:.4f} | {ratio} |")


if __name__ == "__main__":
    main()

"""`make demo`: fetch the real all-MiniLM-L6-v2 checkpoint and the MR movie-review sentences, fine-tune a
sentiment classifier, report dev and test accuracy, and label a few new sentences.

The same job from the command line: `bertkit finetune --config configs/mr.yaml`.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from bertkit.config import from_dict
from bertkit.fetch import fetch
from bertkit.finetune import FinetuneConfig, finetune
from bertkit.inference import evaluate_file, load_task, predict_inputs

NEW_SENTENCES = [
    "A gorgeous, witty, seductive movie that stays with you for days.",
    "The plot is nothing but boilerplate clichés from start to finish.",
    "I wanted to like it, but two hours have never felt so long.",
    "Not a great film, but the performances make it worth seeing.",
]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="bertkit: %(message)s", stream=sys.stderr)
    fetch("minilm")
    fetch("mr")
    output = os.environ.get("BERTKIT_DEMO_OUTPUT", "runs/demo-mr")
    cfg = from_dict(
        FinetuneConfig,
        {
            "task": "classify",
            "model": "minilm",
            "dev": "mr:dev",
            "output": output,
            "max_length": 128,
            "overwrite": True,  # the demo's own directory: a rerun replaces it
            "train": {"data": "mr:train", "epochs": 2, "batch_size": 32, "lr": 5e-5, "seed": 42},
        },
        source="demo",
    )
    print(f"fine-tuning all-MiniLM-L6-v2 on MR (8,458 sentences, 2 epochs) into {output}/ ...")
    start = time.perf_counter()
    dev = finetune(cfg)
    trained = time.perf_counter() - start
    run = load_task(output)
    test = evaluate_file(run, "mr:test", progress=False)
    print(
        f"\ntrained in {trained / 60:.1f} min; best dev accuracy {dev['accuracy']:.4f} "
        f"(F1 {dev['f1']:.4f}, MCC {dev['mcc']:.4f}); test accuracy {test['accuracy']:.4f}"
    )
    print(f"curves: {output}/training.png, confusion matrix: {output}/confusion.png\n")

    for p in predict_inputs(run, NEW_SENTENCES):
        print(f"  {p['label']:<8} {p['probabilities'][p['label']]:.3f}  {p['text']}")
    print(f"\nmore: bertkit predict --model {output} --input your.txt --output predictions.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())

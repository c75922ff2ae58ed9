"""The compact-model table from the runs `bench/compact.sh` made: accuracy per size and arm (mean ± std
over seeds), parameters, and fp32 encode speed of each student against the teacher, measured here in
one process on the same MR dev sentences (the encoder only: what every head runs first).

    .venv/bin/python bench/compact.py --out runs/compact --sizes "tiny mini"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import best_seconds  # noqa: E402  (bench/encode.py, beside this file)

from bertkit.data.readers import read_texts  # noqa: E402
from bertkit.encode import Encoder  # noqa: E402
from bertkit.fetch import resolve_data  # noqa: E402
from bertkit.model import count_parameters  # noqa: E402

ARMS = {"finetune": "(a) fine-tuned from random init", "distill": "(b) distilled from random init"}


def accuracy(run: Path) -> tuple[float, float]:
    dev = json.loads((run / "metrics.json").read_text())["accuracy"]
    test = json.loads((run / "eval-mr-test.json").read_text())["accuracy"]
    return dev, test


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def speed(model_dir: Path, texts: list[str]) -> float:
    encoder = Encoder(model_dir, pooling="cls", normalize=False, device="cpu", max_length=128)
    return len(texts) / best_seconds(lambda: encoder.encode(texts), repeats=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/compact")
    ap.add_argument("--sizes", default="tiny mini")
    ap.add_argument("--n", type=int, default=1000, help="MR dev sentences encoded for the speed column")
    args = ap.parse_args()
    out = Path(args.out)
    texts = read_texts(resolve_data("mr:dev"))[: args.n]
    teacher = out / "teacher"
    t_dev, t_test = accuracy(teacher)
    t_speed = speed(teacher, texts)
    t_params = count_parameters(Encoder(teacher, device="cpu").model)
    print(f"Machine: {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print()
    print("| model | arm | dev accuracy | test accuracy | parameters | encode, sentences/s (fp32) |")
    print("|---|---|---:|---:|---:|---:|")
    print(
        f"| MiniLM-L6 teacher | fine-tuned (configs/mr.yaml) | {t_dev:.4f} | {t_test:.4f} | "
        f"{t_params / 1e6:.1f}M | {t_speed:,.0f} (1.0x) |"
    )
    for size in args.sizes.split():
        for arm, label in ARMS.items():
            runs = sorted(out.glob(f"{size}-{arm}-seed*"))
            runs = [r for r in runs if (r / "eval-mr-test.json").is_file()]
            if not runs:
                continue
            scores = [accuracy(r) for r in runs]
            rate = speed(runs[0], texts)
            params = count_parameters(Encoder(runs[0], device="cpu").model)
            print(
                f"| {size} | {label}, {len(runs)} seed(s) | {summary([d for d, _ in scores])} | "
                f"{summary([t for _, t in scores])} | {params / 1e6:.1f}M | {rate:,.0f} ({rate / t_speed:.1f}x) |"
            )


if __name__ == "__main__":
    main()

"""The compact-model table from the runs `bench/compact.sh` made: accuracy per size and arm (mean ± std
over seeds), parameters, and classification speed of each student against the teacher, measured here
in one process on the same MR dev sentences: the fine-tuned model in PyTorch (fp32) and exported to
ONNX with dynamic int8 quantisation (`bertkit export --quantize int8`, written beside each run).
Then the embedding students: mean cosine of their vectors to MiniLM's on MR test sentences (held out
from their training and dev text), and encode speed (fp32) against MiniLM's.

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
from bertkit.export import export_dir  # noqa: E402
from bertkit.fetch import resolve_data  # noqa: E402
from bertkit.inference import load, predict_inputs  # noqa: E402
from bertkit.model import count_parameters  # noqa: E402

ARMS = {
    "finetune": "(a) fine-tuned from random init",
    "distill": "(b) distilled from random init",
    "pretrained-distill": "(c) pre-trained, then distilled",
}


def accuracy(run: Path) -> tuple[float, float]:
    dev = json.loads((run / "metrics.json").read_text())["accuracy"]
    test = json.loads((run / "eval-mr-test.json").read_text())["accuracy"]
    return dev, test


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def speeds(model_dir: Path, texts: list[str]) -> tuple[float, float, int]:
    """Sentences/s classifying `texts` in fp32 (PyTorch) and int8 (ONNX), and the parameter count."""
    onnx = model_dir / "onnx-int8"
    if not (onnx / "model.int8.onnx").is_file():
        export_dir(model_dir, onnx, quantize="int8", force=True)
    rates = []
    for backend, d in (("torch", model_dir), ("onnx-int8", onnx)):
        run = load(d, backend=backend, device="cpu")
        predict_inputs(run, texts[:64])  # warm up
        rates.append(len(texts) / best_seconds(lambda run=run: predict_inputs(run, texts), repeats=3))
    return rates[0], rates[1], count_parameters(load(model_dir, device="cpu").model)


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
    t_fp32, t_int8, t_params = speeds(teacher, texts)
    print(f"Machine: {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print()
    print("| model | arm | dev accuracy | test accuracy | parameters | sentences/s, fp32 | sentences/s, int8 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(
        f"| MiniLM-L6 teacher | fine-tuned (configs/mr.yaml) | {t_dev:.4f} | {t_test:.4f} | "
        f"{t_params / 1e6:.1f}M | {t_fp32:,.0f} (1.0x) | {t_int8:,.0f} ({t_int8 / t_fp32:.1f}x) |"
    )
    for size in args.sizes.split():
        for arm, label in ARMS.items():
            runs = sorted(out.glob(f"{size}-{arm}-seed*"))
            runs = [r for r in runs if (r / "eval-mr-test.json").is_file()]
            if not runs:
                continue
            scores = [accuracy(r) for r in runs]
            fp32, int8, params = speeds(runs[0], texts)
            print(
                f"| {size} | {label}, {len(runs)} seed(s) | {summary([d for d, _ in scores])} | "
                f"{summary([t for _, t in scores])} | {params / 1e6:.1f}M | {fp32:,.0f} ({fp32 / t_fp32:.1f}x) | "
                f"{int8:,.0f} ({int8 / t_fp32:.1f}x) |"
            )

    embed_table(out, read_texts(resolve_data("mr:test"))[: args.n])


def embed_table(out: Path, texts: list[str]) -> None:
    runs = sorted(r for r in out.glob("embed-*") if (r / "metrics.json").is_file())
    if not runs:
        return
    teacher = Encoder("minilm", device="cpu", max_length=128)
    reference = teacher.encode(texts)
    t_speed = len(texts) / best_seconds(lambda: teacher.encode(texts), repeats=3)
    print()
    print("| embedding model | parameters | cosine to MiniLM, MR test (mean / min) | encode, sentences/s (fp32) |")
    print("|---|---:|---:|---:|")
    print(
        f"| MiniLM-L6 (all-MiniLM-L6-v2) | {count_parameters(teacher.model) / 1e6:.1f}M | 1 | {t_speed:,.0f} (1.0x) |"
    )
    for run in runs:
        student = Encoder(run, device="cpu", max_length=128)
        vectors = student.encode(texts)
        cosine = (vectors * reference).sum(1) / ((vectors**2).sum(1) ** 0.5 * (reference**2).sum(1) ** 0.5)
        rate = len(texts) / best_seconds(lambda student=student: student.encode(texts), repeats=3)
        print(
            f"| {run.name} | {count_parameters(student.model) / 1e6:.1f}M | {cosine.mean():.4f} / {cosine.min():.4f} | "
            f"{rate:,.0f} ({rate / t_speed:.1f}x) |"
        )


if __name__ == "__main__":
    main()

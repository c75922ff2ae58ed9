"""bertkit predict: run a fine-tuned model over inputs; JSONL out, one prediction a line."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bertkit.config import option, parse_args, required
from bertkit.data.benchmarks import data_in, read_through
from bertkit.fetch import resolve_data
from bertkit.inference import BACKENDS, load_task, predict_file
from bertkit.outputs import atomic_write_text, check_output_file


@dataclass
class PredictConfig:
    model: str = required("fine-tuned model directory (written by bertkit finetune)")
    task: str | None = option(
        None, "fill-mask or nsp: run a pretrained model's own heads (a directory written by bertkit pretrain)"
    )
    input: str = required("inputs: text lines, JSONL/TSV with `text` (and `text_b`), or a name like mr:test")
    output: str = required("where to write predictions (JSONL)")
    format: str | None = option(
        None,
        "read the data as a benchmark ships it: glue:mrpc, clue:tnews, lcqmc, imdb, ... (a task's folder "
        "picks its own; docs/data-formats.md)",
    )
    batch_size: int = option(64, "examples per forward pass", at_least=1)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    backend: str = option(
        "torch", "torch, or onnx / onnx-int8 for a directory written by `bertkit export`", choices=BACKENDS
    )
    overwrite: bool = option(False, "replace --output when it already exists")


def main(argv: list[str]) -> int:
    cfg = parse_args(PredictConfig, argv, prog="bertkit predict")
    layout, data = data_in(cfg.format, cfg.input, "test")
    out = check_output_file(cfg.output, [resolve_data(data, "test")], cfg.overwrite)
    run = load_task(cfg.model, cfg.backend, cfg.device, cfg.task)
    read_through(run.fine_tuned, layout)
    rows = predict_file(run, data, cfg.batch_size)
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} predictions -> {out}")
    return 0

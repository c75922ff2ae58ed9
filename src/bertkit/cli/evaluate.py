"""bertkit evaluate: score a fine-tuned model on labelled data; prints and writes the metrics."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bertkit.config import option, parse_args, required
from bertkit.data.benchmarks import data_in, read_through
from bertkit.fetch import resolve_data
from bertkit.inference import BACKENDS, evaluate_file, load_task
from bertkit.outputs import atomic_write_text, check_output_file


@dataclass
class EvaluateConfig:
    model: str = required("fine-tuned model directory (written by bertkit finetune)")
    task: str | None = option(
        None,
        "fill-mask or nsp: score a pretrained model's own heads (a directory written by bertkit pretrain) on "
        "labelled data (fill-mask: `text` with [MASK] and `label`, the masked tokens; nsp: `text`, `text_b`, "
        "`label` is_next or not_next)",
    )
    data: str = required("labelled data: a file or a fetched name such as mr:test")
    output: str | None = option(None, "where to write the metrics as JSON (default: MODEL/eval-DATA.json)")
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
    overwrite: bool = option(
        False,
        "replace --output when it already exists (the default file in MODEL, "
        "this evaluation's own, is always replaced)",
    )


def main(argv: list[str]) -> int:
    cfg = parse_args(EvaluateConfig, argv, prog="bertkit evaluate")
    layout, data = data_in(cfg.format, cfg.data, "dev")
    out = None
    if cfg.output:
        out = check_output_file(cfg.output, [resolve_data(data, "dev")], cfg.overwrite)
    elif Path(cfg.model).is_dir():  # a fetched name: do not write into the cache
        out = check_output_file(Path(cfg.model) / f"eval-{_stem(cfg.data)}.json", overwrite=True)
    run = load_task(cfg.model, cfg.backend, cfg.device, cfg.task)
    read_through(run.fine_tuned, layout)
    metrics = evaluate_file(run, data, cfg.batch_size)
    text = json.dumps(metrics, indent=2)
    print(text)
    if out is None:
        return 0
    atomic_write_text(out, text + "\n")
    print(f"metrics -> {out}", file=sys.stderr)
    return 0


def _stem(data: str) -> str:
    """`mr:test` -> `mr-test`; `data/dev.tsv` -> `dev`."""
    path = Path(data)
    return path.stem if path.suffix else data.replace(":", "-").replace("/", "-")

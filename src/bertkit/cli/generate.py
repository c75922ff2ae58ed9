"""bertkit generate: a sequence-to-sequence model (finetune --task seq2seq) writes a target for every source."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bertkit.config import option, parse_args, required
from bertkit.fetch import resolve_data
from bertkit.generate import GenerateOptions, generate_texts
from bertkit.inference import load_task
from bertkit.outputs import atomic_write_text, check_output_file


@dataclass
class GenerateConfig:
    model: str = required("model directory written by `bertkit finetune --task seq2seq`")
    input: str = required("sources: one a line (.txt), or JSONL/TSV records with `source`")
    output: str = required("where to write the targets (JSONL: source, generated, tokens, stopped)")
    generation: GenerateOptions = field(default_factory=GenerateOptions)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    overwrite: bool = option(False, "replace --output when it already exists")


def main(argv: list[str]) -> int:
    cfg = parse_args(GenerateConfig, argv, prog="bertkit generate")
    path = resolve_data(cfg.input, "test")
    out = check_output_file(cfg.output, [path], cfg.overwrite)
    run = load_task(cfg.model, device=cfg.device)
    sources = [e["text"] for e in run.fine_tuned.read_inputs(str(path))]
    rows = [{"source": s, **g} for s, g in zip(sources, generate_texts(run, sources, cfg.generation))]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} targets -> {out}")
    return 0

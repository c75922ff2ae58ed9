"""bertkit convert: Google's TensorFlow BERT checkpoints <-> Hugging Face model directories, no TensorFlow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bertkit.config import option, parse_args, required
from bertkit.convert.google import hf_to_tf, is_tf_checkpoint, tf_to_hf
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.outputs import check_output_dir, replaced_dir


@dataclass
class ConvertConfig:
    input: str = required(
        "a TensorFlow checkpoint (DIR, DIR/bert_model.ckpt or its .index) or a model "
        "directory (Hugging Face layout, or a fetched name such as minilm)"
    )
    output: str = required("directory to write")
    to: str | None = option(
        None, "target format; default: `hf` for a TensorFlow input, `tf` otherwise", choices=("hf", "tf")
    )
    config: str | None = option(None, "TF input: its bert_config.json, when not beside the checkpoint")
    vocab: str | None = option(None, "TF input: its vocab.txt, when not beside the checkpoint")
    overwrite: bool = option(
        False,
        "replace --output when it already holds files (swapped in only once the "
        "conversion has passed its parity check)",
    )


def main(argv: list[str]) -> int:
    cfg = parse_args(ConvertConfig, argv, prog="bertkit convert")
    source_is_tf = is_tf_checkpoint(cfg.input)
    to = cfg.to or ("hf" if source_is_tf else "tf")
    if to == "hf" and not source_is_tf:
        raise BertkitError(
            f"{cfg.input} is not a TensorFlow checkpoint (no .index file); --to hf "
            "converts from one. To write one from this model, use --to tf"
        )
    if to == "tf" and source_is_tf:
        raise BertkitError(f"{cfg.input} is already a TensorFlow checkpoint; use --to hf to convert it")
    source = Path(cfg.input) if source_is_tf else resolve_model(cfg.input)
    out = check_output_dir(cfg.output, [source, cfg.config, cfg.vocab], cfg.overwrite)
    with replaced_dir(out) as tmp:  # a failed conversion leaves --output as it was
        report = tf_to_hf(cfg.input, tmp, cfg.config, cfg.vocab) if to == "hf" else hf_to_tf(source, tmp)
    report["to"] = str(out / Path(report["to"]).relative_to(tmp))
    print(json.dumps(report, indent=2))
    return 0

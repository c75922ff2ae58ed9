"""bertkit convert: Google's TensorFlow BERT checkpoints <-> Hugging Face model directories, no TensorFlow."""
from __future__ import annotations

import json
from dataclasses import dataclass

from bertkit.config import option, parse_args, required


@dataclass
class ConvertConfig:
    input: str = required("a TensorFlow checkpoint (DIR, DIR/bert_model.ckpt or its .index) or a model "
                          "directory (Hugging Face layout, or a fetched name such as minilm)")
    output: str = required("directory to write")
    to: str | None = option(None, "target format; default: `hf` for a TensorFlow input, `tf` otherwise",
                            choices=("hf", "tf"))
    config: str | None = option(None, "TF input: its bert_config.json, when not beside the checkpoint")
    vocab: str | None = option(None, "TF input: its vocab.txt, when not beside the checkpoint")


def main(argv: list[str]) -> int:
    from bertkit.convert.google import hf_to_tf, is_tf_checkpoint, tf_to_hf
    from bertkit.errors import BertkitError
    from bertkit.fetch import resolve_model

    cfg = parse_args(ConvertConfig, argv, prog="bertkit convert")
    source_is_tf = is_tf_checkpoint(cfg.input)
    to = cfg.to or ("hf" if source_is_tf else "tf")
    if to == "hf":
        if not source_is_tf:
            raise BertkitError(f"{cfg.input} is not a TensorFlow checkpoint (no .index file); --to hf "
                               "converts from one. To write one from this model, use --to tf")
        report = tf_to_hf(cfg.input, cfg.output, cfg.config, cfg.vocab)
    else:
        if source_is_tf:
            raise BertkitError(f"{cfg.input} is already a TensorFlow checkpoint; use --to hf to convert it")
        report = hf_to_tf(resolve_model(cfg.input), cfg.output)
    print(json.dumps(report, indent=2))
    return 0

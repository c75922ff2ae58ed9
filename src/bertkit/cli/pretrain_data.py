"""bertkit pretrain-data: raw text -> masked-LM (+NSP) sequences in memory-mapped shards, for pretraining.

The options besides input, vocab, output, workers and overwrite are bertkit.data.build_pretraining's
BuildSettings (max_seq_length, masking, whole_word, nsp, ...); the output format is described in
bertkit.data.pretraining.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from bertkit.config import option, parse_args, required
from bertkit.data.build_pretraining import BuildSettings, build_pretraining_data, describe

log = logging.getLogger("bertkit")


@dataclass
class PretrainDataConfig(BuildSettings):
    input: list[str] = required("text files, comma-separated (or data names such as corpus-en, corpus-zh)")
    vocab: str = required("vocab.txt, a model directory, or a fetched model name such as minilm or zh-vocab")
    output: str = required("directory to write shards and index.json to")
    workers: int = option(1, "processes; the output is the same for any number", at_least=1)
    overwrite: bool = option(False, "replace the pretraining data already in --output")


def main(argv: list[str]) -> int:
    cfg = parse_args(PretrainDataConfig, argv, prog="bertkit pretrain-data")
    settings = BuildSettings(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(BuildSettings)})
    index = build_pretraining_data(
        cfg.input, cfg.vocab, cfg.output, settings, workers=cfg.workers, overwrite=cfg.overwrite
    )
    log.info("%s", describe(index["stats"]))
    print(cfg.output)
    return 0

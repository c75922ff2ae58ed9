"""bertkit vocab: train a WordPiece vocab.txt (BERT's special tokens first) from raw text."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bertkit.config import option, parse_args, required
from bertkit.fetch import resolve_data
from bertkit.outputs import check_output_file
from bertkit.vocab import train_vocab, write_vocab

log = logging.getLogger("bertkit")


@dataclass
class VocabConfig:
    corpus: list[str] = required("text files, comma-separated (or data names such as corpus-en)")
    output: str = required("the vocab.txt to write; named vocab.txt, it gets a tokenizer_config.json beside it")
    size: int = option(
        30522,
        "tokens in the vocab (bert-base: 30522 English, 21128 Chinese); more when the "
        "corpus has more distinct characters",
        at_least=1,
    )
    lowercase: bool = option(True, "lower-case and strip accents first (an uncased vocab); --no-lowercase keeps case")
    chinese_chars: bool = option(
        False, "add every CJK character of the corpus, and its ## form, as in bert-base-chinese"
    )
    min_frequency: int = option(2, "fewest occurrences for a learned piece", at_least=1)
    overwrite: bool = option(
        False, "replace --output (and the tokenizer_config.json beside a vocab.txt) when it already exists"
    )


def main(argv: list[str]) -> int:
    cfg = parse_args(VocabConfig, argv, prog="bertkit vocab")
    paths = [resolve_data(name) for name in cfg.corpus]
    out = Path(cfg.output) / "vocab.txt" if Path(cfg.output).is_dir() else Path(cfg.output)
    check_output_file(out, paths, cfg.overwrite)
    if out.name == "vocab.txt":
        check_output_file(out.with_name("tokenizer_config.json"), paths, cfg.overwrite)
    tokens = train_vocab(
        paths, cfg.size, lowercase=cfg.lowercase, chinese_chars=cfg.chinese_chars, min_frequency=cfg.min_frequency
    )
    path = write_vocab(tokens, out, cfg.lowercase)
    log.info("%d tokens -> %s", len(tokens), path)
    print(path)
    return 0

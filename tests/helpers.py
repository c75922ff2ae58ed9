"""Small builders shared by the fine-tuning, serving and export tests (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from bertkit.cli.main import main as cli
from bertkit.model import BertConfig


def slice_tsv(src: Path, dst: Path, per_label: int) -> Path:
    """The first `per_label` rows of each label of a text/label TSV."""
    with open(src, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    keep, seen = [], {}
    for row in rows:
        if seen.get(row["label"], 0) < per_label:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            keep.append(row)
    dst.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in keep), encoding="utf-8")
    return dst


def head_conll(src: Path, dst: Path, sentences: int) -> Path:
    """The first `sentences` sentences of a CoNLL file."""
    blocks = src.read_text(encoding="utf-8").split("\n\n")[:sentences]
    dst.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return dst


def run_finetune(tiny_dir, train, dev, out, *extra) -> int:
    return cli(
        [
            "finetune",
            "--task",
            "classify",
            "--model",
            str(tiny_dir),
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--output",
            str(out),
            "--max-length",
            "48",
            "--train.batch-size=16",
            "--train.lr=1e-3",
            "--train.log-every=1",
            "--device",
            "cpu",
            *extra,
        ]
    )


def tiny_config(vocab_size: int, **overrides) -> BertConfig:
    """A 2-layer BERT with hidden size 32 (2 heads, feed-forward 64, 128 positions) for tests."""
    shape = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128
    )
    return BertConfig(vocab_size=vocab_size, **{**shape, **overrides})

"""Every numeric option with a range, given a value outside it, through the real command line: exit
code 2 and one line on stderr naming the option, the value and the allowed range.

The model, data and output paths do not exist, so the range must be checked before any of them is
opened: were it checked later, the error would be a `not found` instead, and nothing may be written.
"""

from __future__ import annotations

import re

import pytest

from bertkit.cli.main import main

# Each verb with its required options, every path missing (MISSING is replaced by tmp_path / "missing").
BASE = {
    "finetune": [
        "--task",
        "classify",
        "--model",
        "MISSING",
        "--train",
        "MISSING/train.tsv",
        "--dev",
        "MISSING/dev.tsv",
        "--output",
        "MISSING/out",
    ],
    "pretrain": ["--data", "MISSING", "--output", "MISSING/out", "--model-size", "tiny", "--vocab", "MISSING"],
    "distill": [
        "--teacher",
        "MISSING",
        "--student",
        "tiny",
        "--train",
        "MISSING/t.tsv",
        "--dev",
        "MISSING/d.tsv",
        "--output",
        "MISSING/out",
    ],
    "pretrain-data": ["--input", "MISSING/a.txt", "--vocab", "MISSING", "--output", "MISSING/out"],
    "vocab": ["--corpus", "MISSING/a.txt", "--output", "MISSING/vocab.txt"],
    "predict": ["--model", "MISSING", "--input", "MISSING/in.txt", "--output", "MISSING/out.jsonl"],
    "evaluate": ["--model", "MISSING", "--data", "MISSING/dev.tsv"],
    "encode": ["--model", "MISSING", "--input", "MISSING/in.txt", "--output", "MISSING/out.npy"],
    "serve": ["--model", "MISSING"],
    "export": ["--model", "MISSING", "--output", "MISSING/out"],
    "benchmark": ["--data-dir", "MISSING", "--model", "MISSING", "--output", "MISSING/out"],
}

# verb, option, value given, value as the error shows it, allowed range
BAD_VALUES = [
    ("finetune", "train.grad-accum", "0", "0", ">= 1"),
    ("finetune", "train.checkpoint-every", "0", "0", ">= 1"),
    ("finetune", "train.log-every", "0", "0", ">= 1"),
    ("finetune", "train.lr", "-1", "-1.0", "> 0"),
    ("finetune", "train.lr", "0", "0.0", "> 0"),
    ("finetune", "train.lr", "nan", "nan", "> 0"),
    ("finetune", "train.lr", "inf", "inf", "> 0"),
    ("finetune", "train.batch-size", "0", "0", ">= 1"),
    ("finetune", "train.max-steps", "-5", "-5", ">= 0"),
    ("finetune", "train.epochs", "0", "0", ">= 1"),
    ("finetune", "train.warmup", "5", "5.0", ">= 0 and <= 1"),
    ("finetune", "train.warmup", "-0.1", "-0.1", ">= 0 and <= 1"),
    ("finetune", "train.eval-batch-size", "0", "0", ">= 1"),
    ("finetune", "train.head-lr", "-1e-4", "-0.0001", ">= 0"),
    ("finetune", "train.weight-decay", "-0.01", "-0.01", ">= 0"),
    ("finetune", "train.max-grad-norm", "-1", "-1.0", ">= 0"),
    ("finetune", "train.eval-every", "-1", "-1", ">= 0"),
    ("finetune", "train.patience", "-1", "-1", ">= 0"),
    ("finetune", "max-length", "1", "1", ">= 2"),
    ("finetune", "qa.doc-stride", "0", "0", ">= 1"),
    ("finetune", "qa.max-query-length", "0", "0", ">= 1"),
    ("finetune", "qa.max-answer-length", "0", "0", ">= 1"),
    ("finetune", "qa.n-best", "0", "0", ">= 1"),
    ("finetune", "temperature", "0", "0.0", "> 0"),
    ("finetune", "dropout", "1", "1.0", ">= 0 and < 1"),
    ("finetune", "dropout", "-0.1", "-0.1", ">= 0 and < 1"),
    ("finetune", "train-examples", "0", "0", ">= 1"),
    ("pretrain", "train.lr", "-inf", "-inf", "> 0"),
    ("pretrain", "train.warmup", "1.5", "1.5", ">= 0 and <= 1"),
    ("pretrain", "eval-instances", "-1", "-1", ">= 0"),
    ("pretrain", "config-overrides.hidden-dropout-prob", "1", "1.0", ">= 0 and < 1"),
    ("pretrain", "config-overrides.attention-probs-dropout-prob", "-0.5", "-0.5", ">= 0 and < 1"),
    ("pretrain-data", "max-seq-length", "7", "7", ">= 8"),
    ("pretrain-data", "max-predictions", "0", "0", ">= 1"),
    ("pretrain-data", "masked-lm-prob", "0", "0.0", "> 0 and <= 1"),
    ("pretrain-data", "masked-lm-prob", "1.5", "1.5", "> 0 and <= 1"),
    ("pretrain-data", "short-seq-prob", "2", "2.0", ">= 0 and <= 1"),
    ("pretrain-data", "dupe-factor", "0", "0", ">= 1"),
    ("pretrain-data", "chunk-mb", "0", "0.0", "> 0"),
    ("pretrain-data", "chunk-mb", "nan", "nan", "> 0"),
    ("pretrain-data", "workers", "0", "0", ">= 1"),
    ("vocab", "size", "0", "0", ">= 1"),
    ("vocab", "min-frequency", "0", "0", ">= 1"),
    ("predict", "batch-size", "0", "0", ">= 1"),
    ("evaluate", "batch-size", "-1", "-1", ">= 1"),
    ("encode", "batch-size", "-3", "-3", ">= 1"),
    ("encode", "max-length", "1", "1", ">= 2"),
    ("serve", "port", "99999", "99999", ">= 0 and <= 65535"),
    ("serve", "port", "-1", "-1", ">= 0 and <= 65535"),
    ("serve", "max-batch", "0", "0", ">= 1"),
    ("serve", "max-batch-tokens", "0", "0", ">= 1"),
    ("serve", "max-wait-ms", "-1", "-1.0", ">= 0"),
    ("serve", "max-queue", "0", "0", ">= 1"),
    ("serve", "max-texts", "0", "0", ">= 1"),
    ("serve", "max-chars", "0", "0", ">= 1"),
    ("serve", "batch-size", "0", "0", ">= 1"),
    ("serve", "max-body-mb", "0", "0.0", "> 0"),
    ("serve", "body-timeout-s", "0", "0.0", "> 0"),
]
# pretrain and distill run the same training loop: its --train.* options, through their own parsers
BAD_VALUES += [
    (verb, *row[1:])
    for verb in ("pretrain", "distill")
    for row in BAD_VALUES
    if row[0] == "finetune" and row[1].startswith("train.")
]
BAD_VALUES += [
    ("distill", "train.seed", "-1", "-1", ">= 0 and <= 4294967295"),
    ("distill", "temperature", "0", "0.0", "> 0"),
    ("distill", "hidden-weight", "-1", "-1.0", ">= 0"),
    ("distill", "attention-weight", "-1", "-1.0", ">= 0"),
    ("distill", "layer-map", "1,0", "0", ">= 1"),
    ("distill", "soft-weight", "1.5", "1.5", ">= 0 and <= 1"),
    ("distill", "unlabeled-examples", "0", "0", ">= 1"),
    ("distill", "max-length", "1", "1", ">= 2"),
    ("distill", "train-examples", "0", "0", ">= 1"),
]

BAD_VALUES += [
    ("finetune", "train.seed", "-1", "-1", ">= 0 and <= 4294967295"),
    ("pretrain", "train.seed", "-1", "-1", ">= 0 and <= 4294967295"),
    ("finetune", "seeds", "1,-1", "-1", ">= 0 and <= 4294967295"),
    ("pretrain", "config-overrides.num-attention-heads", "0", "0", ">= 1"),
    ("pretrain", "config-overrides.hidden-size", "-64", "-64", ">= 1"),
    ("pretrain", "config-overrides.num-hidden-layers", "0", "0", ">= 1"),
    ("pretrain", "config-overrides.intermediate-size", "0", "0", ">= 1"),
    ("pretrain", "config-overrides.max-position-embeddings", "0", "0", ">= 1"),
    ("pretrain", "config-overrides.type-vocab-size", "0", "0", ">= 1"),
    ("pretrain", "config-overrides.initializer-range", "-1", "-1.0", "> 0"),
    ("export", "max-drop", "nan", "nan", ">= -100 and <= 100"),
    ("export", "min-cosine", "1.5", "1.5", ">= 0 and <= 1"),
    ("benchmark", "seeds", "1,-1", "-1", ">= 0 and <= 4294967295"),
    ("benchmark", "budget", "0", "0.0", "> 0 and <= 1"),
    ("benchmark", "budget", "1.5", "1.5", "> 0 and <= 1"),
    ("benchmark", "budget", "nan", "nan", "> 0 and <= 1"),
]


def _run(tmp_path, capsys, verb: str, flag: str, value: str) -> tuple[int, str, str]:
    missing = str(tmp_path / "missing")
    argv = [verb, *(a.replace("MISSING", missing) for a in BASE[verb]), f"--{flag}", value]
    code = main(argv)
    captured = capsys.readouterr()
    assert not (tmp_path / "missing").exists(), "something was written before the options were checked"
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "verb, flag, value, shown, bound", BAD_VALUES, ids=[f"{v} --{f} {x}" for v, f, x, _, _ in BAD_VALUES]
)
def test_a_value_outside_the_range_is_one_line_before_anything_is_loaded(
    tmp_path, capsys, verb, flag, value, shown, bound
):
    code, out, err = _run(tmp_path, capsys, verb, flag, value)
    assert (code, out) == (2, "")
    assert err == f"bertkit {verb}: error: `--{flag}` is {shown}; it must be {bound}\n"


def test_the_table_covers_every_ranged_option(capsys):
    """Every option whose --help shows a range has a row above, so a new range gets a test."""
    tested = {(verb, flag) for verb, flag, *_ in BAD_VALUES}
    untested = []
    for verb in BASE:
        try:
            main([verb, "--help"])
        except SystemExit:  # most verbs print their help and exit; serve returns
            pass
        for line in capsys.readouterr().out.splitlines():
            flag = line.split()[0][2:] if line.startswith("  --") else None
            if flag and re.search(r"[(;] ?(>=|>|<=|<) -?\d", line) and (verb, flag) not in tested:
                untested.append(f"{verb} --{flag}")
    assert untested == []

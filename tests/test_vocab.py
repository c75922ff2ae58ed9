"""Vocab training: specials first, the requested size, ids identical to transformers' BertTokenizerFast
over the trained vocab, every CJK character (and its ## form) with --chinese-chars, the CLI verb."""

from __future__ import annotations

import json

import pytest

from bertkit.cli.main import main
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer, read_vocab
from bertkit.vocab import CJK, train_vocab, write_vocab


def head(src, dst, n, skip=0):
    with open(src, encoding="utf-8") as f:
        lines = [line for k, line in zip(range(skip + n), f) if k >= skip]
    dst.write_text("".join(lines), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def en_vocab(corpus_en_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vocab")
    corpus = head(corpus_en_dir / "corpus.txt", tmp / "train.txt", 3000)
    tokens = train_vocab([corpus], 2000)
    return write_vocab(tokens, tmp / "vocab.txt", lowercase=True), corpus


def test_english_vocab_specials_first_and_size(en_vocab):
    path, corpus = en_vocab
    vocab = read_vocab(path)
    tokens = sorted(vocab, key=vocab.get)
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(tokens) == 2000
    assert any(t.startswith("##") for t in tokens) and "the" in vocab
    assert not any(c.isupper() for t in tokens for c in t if t not in SPECIAL_TOKENS)  # uncased
    assert json.loads((path.parent / "tokenizer_config.json").read_text())["do_lower_case"] is True
    tk = BertTokenizer.from_vocab(path)
    lines = corpus.read_text(encoding="utf-8").splitlines()[:300]
    assert all(tk.unk_id not in e.ids for e in tk.encode_batch(lines, max_length=None))  # every char has a token


def test_trained_vocab_matches_transformers(en_vocab, corpus_en_dir):
    transformers = pytest.importorskip("transformers")
    path, _ = en_vocab
    ours = BertTokenizer.from_vocab(path)
    hf = transformers.BertTokenizerFast(vocab=str(path), do_lower_case=True)
    with open(corpus_en_dir / "corpus.txt", encoding="utf-8") as f:
        unseen = [line.strip() for k, line in zip(range(3200), f) if k >= 3000]  # not trained on
    assert len(unseen) == 200
    expected = hf(unseen)["input_ids"]
    assert [e.ids for e in ours.encode_batch(unseen, max_length=None)] == expected
    assert sum(map(len, expected)) > 20_000


def test_chinese_chars_all_present_with_their_continuations(corpus_zh_dir, tmp_path):
    corpus = head(corpus_zh_dir / "corpus.txt", tmp_path / "zh.txt", 1000)
    chars = set(CJK.findall(corpus.read_text(encoding="utf-8")))
    # 2,621 CJK characters, each in two forms: the learned part is made smaller to keep the size.
    tokens = train_vocab([corpus], 5400, chinese_chars=True)
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(tokens) == len(set(tokens)) == 5400
    vocab = set(tokens)
    assert len(chars) == 2621 and chars <= vocab and {"##" + c for c in chars} <= vocab
    plain = set(train_vocab([corpus], 5400))  # without the option the trainer never makes ##的
    assert chars <= plain and "##的" not in plain
    tk = BertTokenizer.from_vocab(write_vocab(tokens, tmp_path / "vocab.txt", lowercase=True))
    assert tk.tokenize("我爱北京天安门") == list("我爱北京天安门")


def test_bad_utf8_lines_are_skipped(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"hello world\ncaf\xe9 latin-1\nhello there world\n" * 5)
    tokens = train_vocab([corpus], 100, min_frequency=1)
    assert "hello" in tokens and "world" in tokens
    assert not any("\ufffd" in t for t in tokens)


def test_cli_vocab(tmp_path, corpus_en_dir, capsys):
    corpus = head(corpus_en_dir / "corpus.txt", tmp_path / "c.txt", 200)
    out = tmp_path / "model" / "vocab.txt"
    assert main(["vocab", "--corpus", str(corpus), "--size", "500", "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 500
    assert BertTokenizer.from_dir(out.parent).lowercase is True
    assert main(["vocab", "--corpus", str(corpus), "--size", "3", "--output", str(out), "--overwrite"]) == 2
    assert "leaves no room beside the 5 special tokens" in capsys.readouterr().err

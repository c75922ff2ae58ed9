"""Pretraining data: masking rates and whole-word masking on real text, NSP pairs on a corpus whose
tokens name their document and sentence, reproducibility (seeds, worker counts), bad input, and real
corpus-en / corpus-zh built and read back through `PretrainingData`.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from bertkit.cli.main import main
from bertkit.data.build_pretraining import BuildSettings, build_pretraining_data
from bertkit.data.corpus import detect_layout, split_sentences
from bertkit.data.instances import nsp_instances, packed_instances
from bertkit.data.masking import continuation_table, jieba_starts, wordpiece_starts
from bertkit.data.pretraining import PretrainingData, mask_tokens
from bertkit.errors import BertkitError
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer

N_DOCS, N_SENTS = 60, 30


def head(src: Path, dst: Path, n: int) -> Path:
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(n), f)), encoding="utf-8")
    return dst


def original_ids(feature: dict) -> list[int]:
    """The unmasked sequence: masked positions put back to the ids they had."""
    ids = list(feature["input_ids"])
    for position, token in zip(feature["masked_positions"], feature["masked_ids"]):
        ids[position] = token
    return ids


# ---------------------------------------------------------------------------------------------- masking


@pytest.fixture(scope="module")
def en_sequences(en, corpus_en_dir):
    """[CLS] + 126 tokens + [SEP] windows over the first 2,500 paragraphs of corpus-en."""
    with open(corpus_en_dir / "corpus.txt", encoding="utf-8") as f:
        lines = [line for _, line in zip(range(2500), f)]
    ids = [t for enc in en._tk.encode_batch(lines, add_special_tokens=False) for t in enc.ids]
    return [[en.cls_id, *ids[k : k + 126], en.sep_id] for k in range(0, len(ids) - 126, 126)]


def test_mask_tokens_rates_and_whole_words_on_real_english(en, en_sequences):
    special = {en.vocab[t] for t in SPECIAL_TOKENS}
    is_cont = continuation_table(en.vocab)
    rng = random.Random(0)
    counts = {"mask": 0, "random": 0, "same": 0}
    maskable = 0
    for ids in en_sequences:
        starts = wordpiece_starts(ids, is_cont)
        masked, positions, labels = mask_tokens(ids, starts, en.vocab_size, special, rng, 0.15, 20, mask_id=en.mask_id)
        assert positions == sorted(set(positions)) and labels == [ids[p] for p in positions]
        assert all(ids[p] not in special for p in positions)  # [CLS] / [SEP] never masked
        assert all(masked[p] == ids[p] for p in range(len(ids)) if p not in set(positions))
        chosen = set(positions)
        for p in range(2, len(ids) - 1):  # whole words: a ## piece goes with the token before it
            if is_cont[ids[p]]:  # (a window that starts with a ## piece starts a word there)
                assert (p in chosen) == (p - 1 in chosen), en.convert_ids_to_tokens(ids[p - 3 : p + 2])
        for p in positions:
            kind = "mask" if masked[p] == en.mask_id else "same" if masked[p] == ids[p] else "random"
            counts[kind] += 1
            assert masked[p] not in special - {en.mask_id}
        maskable += len(ids) - 2
    total = sum(counts.values())
    assert total > 50_000
    assert abs(counts["mask"] / total - 0.80) < 0.01
    assert abs(counts["random"] / total - 0.10) < 0.01
    assert abs(counts["same"] / total - 0.10) < 0.01
    assert abs(total / maskable - 0.15) < 0.005  # round(0.15 * 126) = 19 a sequence, under the cap of 20


def test_mask_tokens_caps_predictions_and_takes_a_numpy_generator(en, en_sequences):
    special = {en.vocab[t] for t in SPECIAL_TOKENS}
    rng = np.random.default_rng(0)
    for ids in en_sequences[:200]:
        _, positions, _ = mask_tokens(ids, [True] * len(ids), en.vocab_size, special, rng, 0.5, 20, mask_id=en.mask_id)
        assert len(positions) == 20  # 0.5 * 126 capped at max_predictions
    _, positions, _ = mask_tokens(
        [en.cls_id, 2000, en.sep_id], [True] * 3, en.vocab_size, special, rng, mask_id=en.mask_id
    )
    assert positions == [1]  # at least one prediction, never a special token
    assert mask_tokens([en.cls_id, en.sep_id], [True, True], en.vocab_size, special, rng, mask_id=en.mask_id) == (
        [en.cls_id, en.sep_id],
        [],
        [],
    )


def test_chinese_whole_words_come_from_jieba(zh):
    import jieba

    text = "我爱北京天安门"
    assert jieba.lcut(text) == ["我", "爱", "北京", "天安门"]
    enc = zh._tk.encode(text, add_special_tokens=False)
    starts = jieba_starts(text, enc.offsets, [False] * len(enc.ids))
    assert enc.tokens == list(text) and starts == [True, True, True, False, True, False, False]
    ids = [zh.cls_id, *enc.ids, zh.sep_id]
    words = {(1,), (2,), (3, 4), (5, 6, 7)}
    special = {zh.vocab[t] for t in SPECIAL_TOKENS}
    seen = set()
    for seed in range(500):
        _, positions, _ = mask_tokens(
            ids, [True, *starts, True], zh.vocab_size, special, random.Random(seed), 0.45, 20, mask_id=zh.mask_id
        )
        # round(0.45 * 7) = 3 positions: 我+北京, 爱+北京, or 天安门, always whole words
        groups = [w for w in words if set(w) <= set(positions)]
        assert sorted(p for w in groups for p in w) == positions
        seen.update(groups)
    assert seen == words


def test_jieba_groups_match_jieba_words_on_real_chinese(zh, corpus_zh_dir):
    import jieba

    from bertkit.vocab import CJK

    with open(corpus_zh_dir / "corpus.txt", encoding="utf-8") as f:
        lines = [line.strip() for _, line in zip(range(300), f)]
    is_cont = continuation_table(zh.vocab)
    checked = 0
    for line in lines:
        enc = zh._tk.encode(line, add_special_tokens=False)
        starts = jieba_starts(line, enc.offsets, is_cont[enc.ids].tolist())
        groups, begin = set(), None  # character spans of the groups masking will use
        for k, ((s, e), start) in enumerate(zip(enc.offsets, starts)):
            begin = s if start else begin
            if k + 1 == len(starts) or starts[k + 1]:
                groups.add((begin, e))
        # Every all-Chinese jieba word is exactly one group. (Elsewhere WordPiece decides: jieba cuts
        # "１９９８" into digits, BERT keeps it one word of pieces 1 ##9 ##9 ##8.)
        for word, s, e in jieba.tokenize(line):
            if all(CJK.match(c) for c in word):
                assert (s, e) in groups, (line, word)
                checked += 1
    assert checked > 9_500


# ---------------------------------------------------------------------------------------------- NSP


def labelled_corpus(tmp_path: Path, n_docs=10, n_sents=12) -> tuple[Path, Path]:
    """Sentences of 6 tokens `dKsJ`: every token names its document K and sentence J."""
    tokens = [f"d{k}s{j}" for k in range(n_docs) for j in range(n_sents)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + tuple(tokens)) + "\n", encoding="utf-8")
    docs = ["\n".join(" ".join([f"d{k}s{j}"] * 6) for j in range(n_sents)) for k in range(n_docs)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return corpus, vocab


def doc_sent(token: str) -> tuple[int, int]:
    k, j = token[1:].split("s")
    return int(k), int(j)


def test_nsp_pairs_continuation_or_another_document(tmp_path):
    corpus, vocab = labelled_corpus(tmp_path, N_DOCS, N_SENTS)
    out = tmp_path / "data"
    index = build_pretraining_data(
        [corpus],
        vocab,
        out,
        BuildSettings(max_seq_length=32, dupe_factor=4, masking="dynamic", whole_word="none", chunk_mb=0.05),
    )
    assert index["inputs"][0]["format"] == "sentences"
    assert index["stats"]["documents"] == N_DOCS and index["stats"]["sentences"] == N_DOCS * N_SENTS
    data = PretrainingData(out, vocab_size=5 + N_DOCS * N_SENTS)
    tk = BertTokenizer.from_vocab(vocab)
    labels = []
    for i in range(len(data)):
        f = data.feature(i, epoch=1)
        tokens = tk.convert_ids_to_tokens(original_ids(f))
        n_a = f["token_type_ids"].index(1) - 2
        assert tokens[0] == "[CLS]" and tokens[n_a + 1] == "[SEP]" and tokens[-1] == "[SEP]"
        a = [doc_sent(t) for t in tokens[1 : n_a + 1]]
        b = [doc_sent(t) for t in tokens[n_a + 2 : -1]]
        assert len(tokens) <= 32 and a and b
        assert len({k for k, _ in a}) == 1 and len({k for k, _ in b}) == 1  # each segment from one document
        assert a == sorted(a) and b == sorted(b)  # in order
        if f["nsp_label"] == 0:  # IsNext: B goes on where A stops
            assert b[0][0] == a[-1][0] and b[0][1] == a[-1][1] + 1
        else:
            assert b[0][0] != a[0][0]
        labels.append(f["nsp_label"])
    assert len(labels) > 1500
    # NotNext half of the time, plus the lone last sentences of documents that have no continuation
    assert 0.50 < np.mean(labels) < 0.56, np.mean(labels)
    assert abs(index["stats"]["nsp_random_share"] - np.mean(labels)) < 1e-9


def test_short_seq_prob_and_truncation():
    # One-token sentences fill a target exactly, so a sequence's length shows the target it was given.
    documents = [[([100 + 10_000 * k + j], [True]) for j in range(4000)] for k in range(20)]
    rng = random.Random(0)
    lengths, truncated = [], 0
    for d in list(range(len(documents))) * 2:
        for x in nsp_instances(documents, d, 64, 0.1, rng, cls_id=2, sep_id=3):
            lengths.append(len(x.ids))
            truncated += x.truncated
            assert len(x.ids) <= 64 and x.ids.count(3) == 2 and len(x.ids) == len(x.type_ids) == len(x.starts)
    short = np.mean(np.array(lengths) < 64)
    assert len(lengths) > 3000 and abs(short - 0.1) < 0.02, short
    # Long sentences: every pair overflows and is cut from a random end of the longer segment.
    documents = [[(list(range(100 * k, 100 * k + 50)), [True] * 50) for _ in range(4)] for k in range(10)]
    pairs = [x for d in range(10) for x in nsp_instances(documents, d, 32, 0.0, rng, 2, 3)]
    assert all(x.truncated and len(x.ids) == 32 for x in pairs)


def test_packed_full_sentences_cross_documents():
    documents = [[([10 + k] * 5, [True] * 5) for _ in range(3)] for k in range(4)]  # 4 docs x 15 tokens
    out = packed_instances(documents, 24, cls_id=2, sep_id=3)
    assert [x.ids for x in out] == [
        [2] + [10] * 15 + [3, 11, 11, 11, 11, 11, 3],  # doc 0, [SEP], the first sentence of doc 1
        [2] + [11] * 10 + [3] + [12] * 10 + [3],
        [2, 12, 12, 12, 12, 12, 3] + [13] * 15 + [3],
    ]
    assert all(set(x.type_ids) == {0} and x.nsp_label == -1 for x in out)


def test_no_nsp_data_has_no_labels(tmp_path):
    corpus, vocab = labelled_corpus(tmp_path, n_docs=10)
    index = build_pretraining_data(
        [corpus], vocab, tmp_path / "d", BuildSettings(max_seq_length=64, nsp=False, dupe_factor=1)
    )
    data = PretrainingData(tmp_path / "d")
    assert not data.nsp and not (tmp_path / "d" / "shard-00000.nsp_labels.npy").exists()
    f = data.feature(0)
    assert "nsp_label" not in f and set(f["token_type_ids"]) == {0}
    lengths = sorted(data.lengths.tolist())
    assert lengths[-1] <= 64 and lengths[1] > 64 - 6  # full: only a whole sentence did not fit (but the last)
    sequences = [original_ids(data.feature(i)) for i in range(len(data))]
    text_tokens = sum(len(ids) - 1 - ids.count(3) for ids in sequences)  # less [CLS] and the [SEP]s
    assert text_tokens == index["stats"]["corpus_tokens"] == 10 * 12 * 6  # every token once (dupe_factor 1)


# ---------------------------------------------------------------------------------------------- reproducibility


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_same_seed_same_bytes_and_any_worker_count(tmp_path, corpus_en_dir, minilm_dir):
    corpus = head(corpus_en_dir / "corpus.txt", tmp_path / "en.txt", 200)
    settings = BuildSettings(dupe_factor=2, chunk_mb=0.05)
    runs = {}
    for name, workers, seed in [("a", 1, 1), ("b", 1, 1), ("c", 2, 1), ("d", 1, 2)]:
        settings.seed = seed
        build_pretraining_data([corpus], minilm_dir, tmp_path / name, settings, workers=workers)
        runs[name] = shard_bytes(tmp_path / name)
    assert len([n for n in runs["a"] if n.endswith("input_ids.npy")]) >= 3  # several chunks
    assert runs["a"] == runs["b"] == runs["c"]
    assert runs["a"].keys() == runs["d"].keys()
    assert runs["a"]["shard-00000.input_ids.npy"] != runs["d"]["shard-00000.input_ids.npy"]


def test_dynamic_masks_depend_on_epoch_and_index_only(tmp_path, corpus_en_dir, minilm_dir):
    corpus = head(corpus_en_dir / "corpus.txt", tmp_path / "en.txt", 40)
    build_pretraining_data([corpus], minilm_dir, tmp_path / "d", BuildSettings(masking="dynamic", dupe_factor=1))
    data, again = PretrainingData(tmp_path / "d"), PretrainingData(tmp_path / "d")
    raw = np.load(tmp_path / "d" / "shard-00000.input_ids.npy")
    for i in range(len(data)):
        f0, f1 = data.feature(i, epoch=0), data.feature(i, epoch=1)
        assert f0 == again.feature(i, epoch=0)
        assert original_ids(f0) == original_ids(f1) == raw[i, : data.lengths[i]].tolist()
    assert sum(
        data.feature(i, 0)["masked_positions"] != data.feature(i, 1)["masked_positions"] for i in range(len(data))
    ) > 0.9 * len(data)
    pickled = pickle.dumps(data)  # for DataLoader workers: the files are reopened, not copied
    assert len(pickled) < 1000 and pickle.loads(pickled).feature(3, epoch=2) == data.feature(3, epoch=2)


def test_shard_of_splits_disjoint_and_covering(tmp_path):
    corpus, vocab = labelled_corpus(tmp_path, n_docs=10)
    build_pretraining_data([corpus], vocab, tmp_path / "d", BuildSettings(max_seq_length=32, dupe_factor=1))
    data = PretrainingData(tmp_path / "d")
    for world in (1, 2, 3, 7):
        parts = [data.shard_of(rank, world) for rank in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(len(data)))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_counted_and_named_not_fatal(tmp_path):
    _, vocab = labelled_corpus(tmp_path, n_docs=5)
    s = lambda k, j: " ".join([f"d{k}s{j}"] * 6)  # noqa: E731
    lines = [
        s(0, 0),
        s(0, 1),
        "",
        "",
        "",  # blank lines in a row: no document
        s(1, 0),
        "",  # a one-sentence document
        "\x00\x01\x02",
        "",  # a document with no text
        s(2, 0),
        "BAD",
        s(2, 1),
        "",  # an invalid UTF-8 line
        " ".join(["d3s0"] * 80),
        s(3, 1),
        "",  # a sentence longer than a sequence
        s(4, 0),
        s(4, 1),
    ]
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes("\n".join(lines).encode("utf-8").replace(b"BAD", b"caf\xe9 latin-1") + b"\n")
    index = build_pretraining_data([corpus], vocab, tmp_path / "d", BuildSettings(max_seq_length=32))
    stats = index["stats"]
    assert stats["bad_lines"] == 1 and stats["bad_line_examples"] == [
        f"{corpus}:11: not UTF-8 (byte 0xe9 at column 4); line skipped"
    ]
    assert stats["long_sentences"] == 1
    assert stats["long_sentence_examples"] == [f"{corpus}:14: sentence of 80 tokens cut to 29"]
    assert (stats["documents"], stats["empty_documents"], stats["one_sentence_documents"]) == (5, 1, 1)
    assert stats["sentences"] == 9
    data = PretrainingData(tmp_path / "d")
    assert len(data) > 0 and data.lengths.max() <= 32


def test_layouts_and_sentence_splitting(tmp_path):
    assert split_sentences('He said "stop." Then he left! Was it 3.5 p.m. today? Yes') == [
        'He said "stop."',
        "Then he left!",
        "Was it 3.5 p.m. today?",
        "Yes",
    ]
    assert split_sentences("今天下雨了。我没去，“真的吗？”他问；好") == [
        "今天下雨了。",
        "我没去，“真的吗？”",
        "他问；",
        "好",
    ]
    (tmp_path / "s.txt").write_text("a.\nb.\n\nc.\nd.\n\ne.\n", encoding="utf-8")
    (tmp_path / "p.txt").write_text("a. b.\n\nc. d.\n\ne.\n", encoding="utf-8")
    (tmp_path / "q.txt").write_text("a. b.\nc. d.\n", encoding="utf-8")
    assert [detect_layout(tmp_path / n) for n in ("s.txt", "p.txt", "q.txt")] == [
        "sentences",
        "paragraphs",
        "paragraphs",
    ]


def test_readable_errors(tmp_path):
    corpus, vocab = labelled_corpus(tmp_path, n_docs=4)
    build_pretraining_data([corpus], vocab, tmp_path / "d", BuildSettings(max_seq_length=32))
    with pytest.raises(BertkitError, match="already holds pretraining data .*; pass --overwrite"):
        build_pretraining_data([corpus], vocab, tmp_path / "d", BuildSettings(max_seq_length=32))
    build_pretraining_data([corpus], vocab, tmp_path / "d", BuildSettings(max_seq_length=32), overwrite=True)
    with pytest.raises(BertkitError, match="vocab of 53 tokens .* but the model's vocab has 30522"):
        PretrainingData(tmp_path / "d", vocab_size=30522)
    with pytest.raises(BertkitError, match="index.json not found"):
        PretrainingData(tmp_path)
    with pytest.raises(BertkitError, match="max_predictions must be in 1..max_seq_length"):
        build_pretraining_data([corpus], vocab, tmp_path / "e", BuildSettings(max_seq_length=16, max_predictions=20))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(BertkitError, match="holds files that are not pretraining data"):
        build_pretraining_data([corpus], vocab, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").exists()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n\xe0 bient\xf4t\n")
    with pytest.raises(BertkitError, match="no sequences could be made .* 2 lines not UTF-8"):
        build_pretraining_data([latin1], vocab, tmp_path / "f")


# ---------------------------------------------------------------------------------------------- real corpora


@pytest.mark.data
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_real_corpus_round_trip(lang, tmp_path, request):
    corpus_dir = request.getfixturevalue(f"corpus_{lang}_dir")
    model_dir = request.getfixturevalue("minilm_dir" if lang == "en" else "zh_vocab_dir")
    corpus = head(corpus_dir / "corpus.txt", tmp_path / "corpus.txt", 300)
    index = build_pretraining_data([corpus], model_dir, tmp_path / "d", BuildSettings(dupe_factor=2))
    stats = index["stats"]
    assert json.loads((tmp_path / "d" / "index.json").read_text(encoding="utf-8")) == index
    assert index["version"] == 1 and index["vocab_size"] == {"en": 30522, "zh": 21128}[lang]
    assert index["seed"] == 12345 and index["nsp"] and index["masking"] == "static"
    assert index["whole_word"] == {"en": "wordpiece", "zh": "jieba"}[lang]
    assert index["inputs"][0]["format"] == "paragraphs"
    assert (stats["documents"], stats["sentences"]) == {"en": (300, 1782), "zh": (300, 600)}[lang]
    assert abs(stats["masked_fraction"] - 0.15) < 0.005 and stats["bad_lines"] == 0
    data = PretrainingData(tmp_path / "d", vocab_size={"en": 30522, "zh": 21128}[lang])
    n = len(data)
    assert n == stats["instances"] > 500 and data.lengths.shape == (n,) and data.lengths.max() <= 128
    ids = np.load(tmp_path / "d" / "shard-00000.input_ids.npy", mmap_mode="r")
    assert ids.shape == (n, 128) and ids.dtype == np.uint16
    assert np.load(tmp_path / "d" / "shard-00000.masked_ids.npy").shape == (n, 20)

    tk = BertTokenizer.from_dir(model_dir)
    lines = [tk._tk.encode(line, add_special_tokens=False).ids for line in corpus.read_text("utf-8").splitlines()]
    for i in range(0, n, n // 20):  # segment A is a run of text of one line of the corpus
        f = data.feature(i)
        ids = original_ids(f)
        a = ids[1 : f["token_type_ids"].index(1) - 1]
        assert any(a == line[k : k + len(a)] for line in lines for k in range(len(line) - len(a) + 1))
        masked = [f["input_ids"][p] for p in f["masked_positions"]]
        assert 0 < len(masked) <= 20 and masked.count(tk.mask_id) >= len(masked) // 3
    text = tk.decode(original_ids(data.feature(0)), skip_special_tokens=False)
    assert text.startswith("[CLS] ") and text.count("[SEP]") == 2


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_pretrain_data(tmp_path, capsys):
    corpus, vocab = labelled_corpus(tmp_path, n_docs=8)
    out = tmp_path / "d"
    argv = [
        "pretrain-data",
        "--input",
        str(corpus),
        "--vocab",
        str(vocab),
        "--output",
        str(out),
        "--max-seq-length",
        "32",
        "--masking",
        "dynamic",
        "--no-nsp",
        "--seed",
        "7",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = PretrainingData(out)
    assert data.dynamic and not data.nsp and data.index["seed"] == 7 and len(data) > 0
    assert main(argv) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert (
        main(
            [
                "pretrain-data",
                "--input",
                str(corpus),
                "--vocab",
                str(vocab),
                "--output",
                str(out),
                "--masking",
                "dynamc",
            ]
        )
        == 2
    )
    assert "did you mean `dynamic`" in capsys.readouterr().err

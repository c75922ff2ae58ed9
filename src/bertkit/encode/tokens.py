"""Token and word vectors of a text, and the two files they are written to.

A text's token vectors are ragged (one row per word piece), so `bertkit encode --pooling none` writes
either one .npz of flat arrays or one JSONL line per text:

    X.npz   vectors  float32 [T, H]   every text's rows, text after text (T tokens in all)
            tokens   str     [T]      the word pieces as the model read them (or the words, --words)
            spans    int64   [T, 2]   [start, end) character span of each in its ORIGINAL text
            lengths  int64   [N]      rows per text (0 for a text without tokens)
            starts   int64   [N]      row of each text's first vector: text i is rows
                                      starts[i] : starts[i] + lengths[i]
    X.jsonl {"tokens": [...], "spans": [[start, end], ...], "vectors": [[H floats], ...]}, line i = text i

Both load without pickle: `np.load("X.npz")` and `json.loads(line)`; `load_npz` gives the records back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertkit.outputs import atomic_path

# the code points BERT's tokenizer treats as Chinese characters: each one is a word of its own
_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\U0002f800-\U0002fa1f"
)
_WORDS = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


@dataclass
class TokenVectors:
    """One text's vectors: `text[start:end]` for each span is the original text of that token or word."""

    tokens: list[str]  # word pieces as the model read them (lower-cased, `##` continuations), or words
    spans: list[tuple[int, int]]  # [start, end) character spans into the original text
    vectors: np.ndarray  # float32 [len(tokens), H]


def words_of(record: TokenVectors, text: str) -> TokenVectors:
    """One vector per whitespace-separated word of `text`, and per Chinese character: the mean of its word
    pieces' vectors (a piece belongs to the word its span starts in). A word with no pieces (characters
    the tokenizer drops, or a part of the text cut off at max_length) has no entry."""
    found = list(_WORDS.finditer(text))
    word_starts = np.array([m.start() for m in found], dtype=np.int64)
    word_ends = np.array([m.end() for m in found], dtype=np.int64)
    piece_starts = np.array([s for s, _ in record.spans], dtype=np.int64)
    word = np.searchsorted(word_starts, piece_starts, side="right") - 1  # [n pieces]
    inside = word >= 0
    inside[inside] &= piece_starts[inside] < word_ends[word[inside]]
    word = word[inside]
    width = record.vectors.shape[1]
    sums = np.zeros((len(found), width), dtype=np.float64)
    np.add.at(sums, word, record.vectors[inside])
    counts = np.bincount(word, minlength=len(found))
    keep = np.flatnonzero(counts)
    return TokenVectors(
        tokens=[found[w].group() for w in keep],
        spans=[(found[w].start(), found[w].end()) for w in keep],
        vectors=(sums[keep] / counts[keep, None]).astype(np.float32),
    )


def save_npz(path: Path, records: list[TokenVectors], width: int) -> None:
    """The .npz layout of the module docstring; `width` (H) shapes `vectors` when there are no tokens."""
    lengths = np.array([len(r.tokens) for r in records], dtype=np.int64)
    vectors = [r.vectors for r in records if len(r.tokens)]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            vectors=np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32),
            tokens=np.array([t for r in records for t in r.tokens], dtype=str),
            spans=np.array([s for r in records for s in r.spans], dtype=np.int64).reshape(-1, 2),
            lengths=lengths,
            starts=np.cumsum(lengths) - lengths,
        )


def load_npz(path: str | Path) -> list[TokenVectors]:
    """The records `save_npz` wrote, in input order."""
    with np.load(path) as data:
        vectors, tokens, spans = data["vectors"], data["tokens"].tolist(), data["spans"].tolist()
        rows = [slice(s, s + n) for s, n in zip(data["starts"].tolist(), data["lengths"].tolist())]
    return [TokenVectors(tokens[r], [(s, e) for s, e in spans[r]], vectors[r]) for r in rows]


def save_jsonl(path: Path, records: list[TokenVectors]) -> None:
    """One line per text: {"tokens", "spans", "vectors"}; float32 values written as JSON numbers."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            line = {"tokens": r.tokens, "spans": [list(s) for s in r.spans], "vectors": r.vectors.tolist()}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")

"""A vector index on disk: sentence vectors memory-mapped, their texts and ids beside them, searched
exactly (a batched matrix product, the top k by argpartition) or approximately (`ann.py`).

An index directory holds
  index.json                        what built it (the model, its sha256, pooling, layer, normalisation,
                                    max length), dim, count, dtype, and the approximate index's settings
                                    with its measured recall@10
  vectors.npy                       [N, D] float32, float16 or int8, opened with mmap_mode="r": the OS
                                    pages it in as it is searched, so an index larger than memory works
  scales.npy                        int8 only: [N] float32, each row's scale (vector ~ int8 row * scale)
  texts.bin, texts.offsets.npy      the texts, UTF-8: row i is bin[offsets[i]:offsets[i + 1]]
  ids.bin, ids.offsets.npy          the ids, the same way, when the input had an `id` field
  ann.faiss                         the approximate index, when one was built

A score is the inner product of the query's vector with a stored one: the cosine similarity when the
model's vectors are L2-normalised (MiniLM's are).

Shapes: N indexed vectors, D dimensions, Q queries, C rows of one chunk, k hits per query.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertkit.errors import BertkitError
from bertkit.outputs import atomic_write_text

FORMAT = 1
DTYPES = ("float32", "float16", "int8")
MAX_K = 1000  # most hits per query: the CLI's -k and the server's `k`
CHUNK_ROWS = 16384  # rows scored per matrix product: [Q, C] scores and a float32 copy of C rows in memory


# --- storage ------------------------------------------------------------------------------------------


def quantize(block: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 [C, D] -> (stored rows [C, D], scales [C] for int8 else None).

    int8 keeps each row's largest magnitude at 127: row ~ int8 row * scale, so a score needs one
    multiply per row after the integer dot product, and short and long vectors lose the same share."""
    if dtype == "float32":
        return block.astype(np.float32), None
    if dtype == "float16":
        return block.astype(np.float16), None
    peak = np.abs(block).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)  # [C]
    rows = np.clip(np.rint(block / scales[:, None]), -127, 127).astype(np.int8)
    return rows, scales


def dequantize(rows: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """Stored rows [C, D] -> float32 [C, D]."""
    out = np.asarray(rows, dtype=np.float32)
    return out * scales[:, None] if scales is not None else out


def write_strings(directory: Path, name: str, values: Iterable[str]) -> int:
    """`name`.bin (UTF-8, back to back) and `name`.offsets.npy (int64 [N + 1]); returns N."""
    offsets = [0]
    with open(directory / f"{name}.bin", "wb") as f:
        for value in values:
            data = value.encode("utf-8")
            f.write(data)
            offsets.append(offsets[-1] + len(data))
    np.save(directory / f"{name}.offsets.npy", np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


class Strings:
    """Row -> string of a column written by `write_strings`, read through memory maps."""

    def __init__(self, directory: Path, name: str):
        self.offsets = np.load(directory / f"{name}.offsets.npy", mmap_mode="r")
        size = int(self.offsets[-1])
        # np.memmap refuses an empty file: a column of empty strings reads from an empty buffer
        self.data = np.memmap(directory / f"{name}.bin", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return bytes(self.data[start:end]).decode("utf-8")


class VectorWriter:
    """Fills vectors.npy (and scales.npy for int8) chunk by chunk, so that the float32 vectors of a big
    input never sit in memory at once: `w.add(block)` for consecutive blocks of rows, then `w.close()`."""

    def __init__(self, directory: Path, count: int, dim: int, dtype: str):
        if dtype not in DTYPES:
            raise BertkitError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
        self.directory, self.count, self.dim, self.dtype = directory, count, dim, dtype
        self.vectors = np.lib.format.open_memmap(directory / "vectors.npy", "w+", np.dtype(dtype), (count, dim))
        self.scales = np.zeros(count, np.float32) if dtype == "int8" else None
        self.filled = 0

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        assert block.ndim == 2 and block.shape[1] == self.dim and self.filled + len(block) <= self.count
        if not np.isfinite(block).all():
            row = self.filled + int(np.argwhere(~np.isfinite(block))[0, 0])
            raise BertkitError(f"vector {row} holds NaN or infinity; the model's output for that text is broken")
        rows, scales = quantize(block, self.dtype)
        self.vectors[self.filled : self.filled + len(block)] = rows
        if self.scales is not None and scales is not None:
            self.scales[self.filled : self.filled + len(block)] = scales
        self.filled += len(block)

    def close(self) -> None:
        assert self.filled == self.count, (self.filled, self.count)
        self.vectors.flush()
        del self.vectors
        if self.scales is not None:
            np.save(self.directory / "scales.npy", self.scales)


# --- exact search -------------------------------------------------------------------------------------


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """[Q, C] -> column indices [Q, min(k, C)] of the best scores per row, in no order."""
    k = min(k, scores.shape[1])
    if k == scores.shape[1]:
        return np.broadcast_to(np.arange(k), (len(scores), k))
    return np.argpartition(scores, -k, axis=1)[:, -k:]


def ranked(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each query's hits best first; equal scores by row, so results do not depend on chunking."""
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def exact_search(
    vectors: np.ndarray, scales: np.ndarray | None, queries: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], rows [Q, k]), best first, of every stored vector against float32 queries [Q, D].

    The rows are read chunk by chunk: each chunk's [Q, C] scores keep their top k (argpartition, no full
    sort), which are merged with the best so far; the memory used is a chunk, not the index."""
    q = np.asarray(queries, dtype=np.float32)
    k = min(k, len(vectors))
    best_scores = np.zeros((len(q), 0), np.float32)
    best_rows = np.zeros((len(q), 0), np.int64)
    for start in range(0, len(vectors), chunk_rows):
        block = np.asarray(vectors[start : start + chunk_rows], dtype=np.float32)  # [C, D]
        scores = q @ block.T  # [Q, C]
        if scales is not None:
            scores *= scales[start : start + len(block)]
        keep = top_k_rows(scores, k)
        scores = np.concatenate([best_scores, np.take_along_axis(scores, keep, 1)], 1)
        rows = np.concatenate([best_rows, keep + start], 1)
        keep = top_k_rows(scores, k)
        best_scores, best_rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)
    return ranked(best_scores, best_rows)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true hits [Q, k] that `found` [Q, k] holds (-1: no hit)."""
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size if truth.size else 1.0  # nothing to find (an index of one vector)


# --- the index ----------------------------------------------------------------------------------------


@dataclass
class Hit:
    row: int
    score: float
    id: str | None = None
    text: str | None = None

    def as_dict(self) -> dict:
        out: dict = {"row": self.row, "score": self.score}
        if self.id is not None:
            out["id"] = self.id
        if self.text is not None:
            out["text"] = self.text
        return out


class Index:
    """`Index.load(path)`: an index directory, memory-mapped; `search(query vectors, k)` -> hits."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        self.count, self.dim, self.dtype = int(meta["count"]), int(meta["dim"]), meta["dtype"]
        self.vectors = np.load(path / "vectors.npy", mmap_mode="r")
        self.scales = np.load(path / "scales.npy") if self.dtype == "int8" else None
        self.texts = Strings(path, "texts") if meta.get("texts") else None
        self.ids = Strings(path, "ids") if meta.get("ids") else None
        self.ann = None
        if meta.get("ann"):
            from bertkit.search.ann import load_ann  # faiss: the `search` extra, only for an approximate index

            self.ann = load_ann(path / "ann.faiss", meta["ann"])

    @classmethod
    def load(cls, path: str | Path, flag: str = "--index") -> Index:
        path = Path(path)
        meta_file = path / "index.json"
        if not meta_file.is_file():
            what = "does not exist" if not path.exists() else "has no index.json"
            raise BertkitError(f"{flag} {path} {what}: give a directory written by `bertkit index build`")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise BertkitError(
                f"{meta_file}: index format {meta.get('format')!r}, this bertkit reads format {FORMAT}; "
                "rebuild the index with `bertkit index build`"
            )
        index = cls(path, meta)
        if index.vectors.shape != (index.count, index.dim) or index.vectors.dtype != np.dtype(index.dtype):
            raise BertkitError(
                f"{path}/vectors.npy holds {index.vectors.dtype} {list(index.vectors.shape)}, but index.json "
                f"says {index.dtype} [{index.count}, {index.dim}]: the index is damaged; rebuild it"
            )
        return index

    def search(
        self, queries: np.ndarray, k: int, exact: bool = False, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k'], rows [Q, k']) best first, k' = min(k, N). Approximate when the index has an
        approximate part and `exact` is not asked for; there a row of -1 means fewer than k were found."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise BertkitError(f"query vectors {list(queries.shape)}: the index holds {self.dim}-dimensional vectors")
        if self.ann is not None and not exact:
            return self.ann.search(queries, min(k, self.count), nprobe)
        return exact_search(self.vectors, self.scales, queries, k)

    def hits(self, scores: np.ndarray, rows: np.ndarray) -> list[list[Hit]]:
        """One list of hits per query, with the ids and texts of the rows."""
        out = []
        for query_scores, query_rows in zip(scores, rows):
            out.append(
                [
                    Hit(
                        row=int(r),
                        score=float(s),
                        id=self.ids[int(r)] if self.ids is not None else None,
                        text=self.texts[int(r)] if self.texts is not None else None,
                    )
                    for s, r in zip(query_scores, query_rows)
                    if r >= 0
                ]
            )
        return out


def results(queries: list[str], hits: list[list[Hit]]) -> list[dict]:
    """`{"query", "hits"}` per query: a JSON line of `bertkit search`, an item of the server's /search."""
    return [{"query": q, "hits": [h.as_dict() for h in query_hits]} for q, query_hits in zip(queries, hits)]


def write_meta(directory: Path, meta: dict) -> None:
    atomic_write_text(directory / "index.json", json.dumps({"format": FORMAT, **meta}, indent=2) + "\n")

"""Approximate search: faiss's inverted-file index (IVF) beside the exact vectors.

k-means splits the vectors into `nlist` ~ sqrt(N) clusters; a query is scored against the vectors of
its `nprobe` nearest clusters only, so a search reads about nprobe / nlist of the index. The clusters'
vectors are stored as the index stores its own: float32 as they are (IVF-Flat), float16 and int8
through faiss's scalar quantizers (fp16, 8-bit per dimension).

IVF rather than a graph index (HNSW): it trains and fills in one pass over the vectors (a minute for
a million on two cores, where a graph takes tens), and `nprobe` trades speed for recall at query time.
At build time `nprobe` is raised until recall@10 against exact search, on a sample of the indexed
vectors used as queries (each leaving itself out), reaches the target; that recall is kept in
index.json.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from bertkit.errors import BertkitError
from bertkit.search.index import dequantize, exact_search, recall_at

log = logging.getLogger("bertkit")

TRAIN_PER_LIST = 50  # k-means sample: 50 vectors a cluster (faiss asks for 39 at least)
ADD_ROWS = 65536  # vectors handed to faiss at a time (float32 copies)
RECALL_SAMPLE = 1000  # indexed vectors used as queries to measure recall@10
RECALL_K = 10
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
KINDS = {"float32": "ivf-flat", "float16": "ivf-sq-fp16", "int8": "ivf-sq-8bit"}


def _faiss():
    logging.getLogger("faiss").setLevel(logging.WARNING)  # not its INFO lines on which CPU build it loads
    try:
        import faiss  # the `search` extra: only an approximate index needs it
    except ImportError:
        raise BertkitError(
            "approximate search needs faiss: pip install 'bertkit[search]' (faiss-cpu); or build the index "
            "with --no-ann, or search it with --exact"
        ) from None
    return faiss


def nlist_for(count: int) -> int:
    return max(1, min(65536, round(math.sqrt(count))))


def _float_rows(vectors: np.ndarray, scales: np.ndarray | None, rows) -> np.ndarray:
    return np.ascontiguousarray(dequantize(vectors[rows], scales[rows] if scales is not None else None))


def without_self(rows: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """[S, k + 1] hits of indexed vectors used as queries -> [S, k] without each query's own row.

    A query that is itself indexed finds itself, and in the cluster the IVF index probes first: left
    in, it would lift recall above what a new query sees (by 0.1 at k = 10)."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, (found, row) in enumerate(zip(rows, own)):
        others = found[found != row][:k]
        out[i, : len(others)] = others
    return out


def build_ann(
    vectors: np.ndarray,
    scales: np.ndarray | None,
    dtype: str,
    out: Path,
    rng: np.random.Generator,
    target_recall: float = 0.95,
) -> dict:
    """Train and fill an IVF index over stored vectors [N, D], tune nprobe to `target_recall`, write it
    to `out`; returns its index.json entry."""
    faiss = _faiss()
    n, dim = vectors.shape
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    if dtype == "float32":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        kind = faiss.ScalarQuantizer.QT_fp16 if dtype == "float16" else faiss.ScalarQuantizer.QT_8bit
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, kind, faiss.METRIC_INNER_PRODUCT)
    train = np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False))
    index.train(_float_rows(vectors, scales, train))
    for start in range(0, n, ADD_ROWS):
        index.add(_float_rows(vectors, scales, slice(start, start + ADD_ROWS)))

    sample = np.sort(rng.choice(n, size=min(n, RECALL_SAMPLE), replace=False))
    queries = _float_rows(vectors, scales, sample)  # [S, D]
    k = min(RECALL_K, n - 1)
    _, truth = exact_search(vectors, scales, queries, k + 1)
    truth = without_self(truth, sample, k)
    recalls: dict[str, float] = {}
    nprobe = 1
    for nprobe in [p for p in NPROBES if p < nlist] + [nlist]:
        _, found = index.search(queries, k + 1, params=faiss.SearchParametersIVF(nprobe=nprobe))
        recalls[str(nprobe)] = round(recall_at(without_self(found, sample, k), truth), 4)
        if recalls[str(nprobe)] >= target_recall:
            break
    faiss.write_index(index, str(out))
    return {
        "kind": KINDS[dtype],
        "nlist": nlist,
        "nprobe": nprobe,
        "recall_at_10": recalls[str(nprobe)],
        "recall_sample": len(sample),
        "recall_by_nprobe": recalls,
        "target_recall": target_recall,
    }


class Ann:
    """The IVF index of an index directory, read through a memory map."""

    def __init__(self, index, nprobe: int, nlist: int):
        self.index, self.nprobe, self.nlist = index, nprobe, nlist

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        params = faiss.SearchParametersIVF(nprobe=min(nprobe or self.nprobe, self.nlist))  # per call: thread-safe
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        return scores, rows


def load_ann(path: Path, meta: dict) -> Ann:
    faiss = _faiss()
    if not path.is_file():
        raise BertkitError(f"{path} is missing, though index.json names an approximate index: rebuild the index")
    return Ann(faiss.read_index(str(path), faiss.IO_FLAG_MMAP), int(meta["nprobe"]), int(meta["nlist"]))

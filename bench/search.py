"""Search at scale: build and query a 1,000,000-vector index, exact and approximate (faiss IVF).

    .venv/bin/python bench/search.py [--n 1000000] [--dim 384] [--dtype float32] [--dir /tmp/bertkit-search]

The vectors are synthetic and L2-normalised, shaped like sentence vectors: each is a topic direction
plus a sub-topic direction plus noise (1,000 topics of 20 sub-topics), so that near neighbours exist
and a cluster index has structure to find. Uniform random vectors would not do: in 384 dimensions
every pair of them is nearly orthogonal and no index, exact or approximate, finds meaningful
neighbours. Queries are 1,000 fresh vectors drawn the same way (not indexed ones).

Reports: build time (writing the vectors, then the IVF index with its nprobe tuning), the files' sizes,
resident memory (anonymous, i.e. the process's own, and file-backed, i.e. index pages the OS mapped in),
queries/s of exact search (batches of 64, over the memory-mapped vectors) and of the IVF index (one
query at a time and batches of 64), and the IVF index's recall@10 against exact search on the
fresh queries beside the recall measured at build time on indexed vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from bertkit.search.build import write_index
from bertkit.search.index import Index, recall_at

TOPICS, SUBTOPICS = 1000, 20


class Mixture:
    """Normalised vectors: 0.6 * topic + 0.6 * sub-topic + 0.8 * noise, each part of about unit length."""

    def __init__(self, dim: int, rng: np.random.Generator):
        self.dim = dim
        self.topics = rng.standard_normal((TOPICS, dim)).astype(np.float32) / np.sqrt(dim)
        self.subs = rng.standard_normal((TOPICS, SUBTOPICS, dim)).astype(np.float32) / np.sqrt(dim)

    def draw(self, n: int, rng: np.random.Generator, block: int = 65536):
        for start in range(0, n, block):
            m = min(block, n - start)
            t, s = rng.integers(0, TOPICS, m), rng.integers(0, SUBTOPICS, m)
            noise = rng.standard_normal((m, self.dim), dtype=np.float32) / np.sqrt(self.dim)
            x = 0.6 * self.topics[t] + 0.6 * self.subs[t, s] + 0.8 * noise
            yield x / np.linalg.norm(x, axis=1, keepdims=True)


def memory() -> dict[str, float]:
    """Resident memory now in MB: anonymous (the process's own) and file-backed (mapped index pages)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def rate(fn, queries: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        fn(queries[i : i + batch])
    return len(queries) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "int8"))
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--exact-queries", type=int, default=256, help="queries timed on exact search (it is slow)")
    p.add_argument("--dir", default="/tmp/bertkit-search")
    p.add_argument("--keep", action="store_true", help="keep the index directory")
    args = p.parse_args()

    mixture = Mixture(args.dim, np.random.default_rng(0))
    out = Path(args.dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; n={args.n:,} dim={args.dim}")

    start = time.perf_counter()
    meta = write_index(
        out,
        mixture.draw(args.n, np.random.default_rng(1)),
        args.n,
        args.dim,
        {"model": "synthetic"},
        dtype=args.dtype,
        ann=True,
    )
    build_s = time.perf_counter() - start
    ann = meta["ann"]
    peak_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"build: {build_s:.1f} s (vectors {build_s - ann['build_seconds']:.1f} s incl. generating them, "
        f"IVF {ann['build_seconds']:.1f} s: {ann['nlist']} lists, nprobe {ann['nprobe']}, "
        f"recall@10 on indexed vectors {ann['recall_at_10']:.3f}, by nprobe {ann['recall_by_nprobe']}); "
        f"peak RSS {peak_build:.0f} MB"
    )
    sizes = {f.name: size_mb(f) for f in sorted(out.iterdir())}
    print("files (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items() if v >= 0.1))

    queries = np.concatenate(list(mixture.draw(args.queries, np.random.default_rng(2))))
    index = Index.load(out)
    loaded = memory()
    exact_q = queries[: args.exact_queries]
    exact_qps = rate(lambda q: index.search(q, 10, exact=True), exact_q, 64)
    after_exact = memory()
    _, truth = index.search(exact_q, 10, exact=True)
    ann_single = rate(lambda q: index.search(q, 10), queries, 1)
    ann_batch = rate(lambda q: index.search(q, 10), queries, 64)
    _, found = index.search(exact_q, 10)
    recall = recall_at(found, truth)
    after_ann = memory()
    print(f"memory after load (MB): {loaded}")
    print(f"memory after exact search (MB): {after_exact}")
    print(f"memory after IVF search (MB): {after_ann}")
    print(f"exact: {exact_qps:.1f} queries/s (batches of 64, {len(exact_q)} queries)")
    print(f"IVF: {ann_single:.0f} queries/s one at a time, {ann_batch:.0f} queries/s in batches of 64")
    print(f"IVF recall@10 against exact search on {len(exact_q)} fresh queries: {recall:.3f}")
    summary = {
        "n": args.n,
        "dim": args.dim,
        "dtype": args.dtype,
        "build_s": round(build_s, 1),
        "ann_build_s": ann["build_seconds"],
        "nlist": ann["nlist"],
        "nprobe": ann["nprobe"],
        "recall_indexed": ann["recall_at_10"],
        "recall_fresh": round(recall, 3),
        "files_mb": {k: round(v, 1) for k, v in sizes.items()},
        "peak_rss_build_mb": round(peak_build),
        "rss_after_exact_mb": after_exact,
        "rss_after_ivf_mb": after_ann,
        "exact_qps": round(exact_qps, 1),
        "ivf_qps_single": round(ann_single),
        "ivf_qps_batch64": round(ann_batch),
    }
    print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()

"""`make demo`: fetch the real all-MiniLM-L6-v2 checkpoint and the MR movie-review sentences, encode
2,000 sentences, and print the nearest neighbours of a few by cosine similarity."""
from __future__ import annotations

import sys
import time

import numpy as np

QUERIES = [
    "A gorgeous, witty, seductive movie.",
    "The plot is nothing but boilerplate clichés from start to finish.",
    "An utterly compelling 'who wrote it' in which the reputation of the most famous author who ever lived comes into question.",
    "It's a lovely film with lovely performances by Buy and Accorsi.",
]


def main() -> int:
    from bertkit import Encoder
    from bertkit.data.readers import read_texts
    from bertkit.fetch import fetch, resolve_data

    fetch("minilm")
    fetch("mr")
    pool = read_texts(resolve_data("mr:dev"))[:2000]
    encoder = Encoder("minilm")  # mean pooling + L2 normalisation: MiniLM's own sentence vector
    start = time.perf_counter()
    vectors = encoder.encode(pool, progress=True)
    queries = encoder.encode(QUERIES)
    took = time.perf_counter() - start
    print(f"\nencoded {len(pool) + len(QUERIES)} sentences with all-MiniLM-L6-v2 in {took:.1f}s "
          f"({encoder.pooling} pooling, normalize={encoder.normalize}, dim {encoder.dim})\n")
    scores = queries @ vectors.T  # cosine: the vectors are unit length
    for query, row in zip(QUERIES, scores):
        print(f"query: {query}")
        for i in np.argsort(-row)[:3]:
            print(f"  {row[i]:.3f}  {pool[i]}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Semantic search: an index of sentence vectors on disk (index.py), searched exactly or through faiss
(ann.py), built from texts and queried with the model that built it (build.py)."""

from bertkit.search.index import DTYPES, MAX_K, Hit, Index, exact_search

__all__ = ["DTYPES", "MAX_K", "Hit", "Index", "exact_search"]

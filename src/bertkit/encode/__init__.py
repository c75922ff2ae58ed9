"""Sentence and token vectors: pooling, the batched Encoder (and, later, the HTTP server)."""
from bertkit.encode.encoder import POOLINGS, Encoder, pool

__all__ = ["Encoder", "POOLINGS", "pool"]

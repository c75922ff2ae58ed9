"""Sentence vectors: pooling, the batched `Encoder`, and the HTTP server (`bertkit.encode.server`)."""

from bertkit.encode.encoder import POOLINGS, Encoder, pool

__all__ = ["Encoder", "POOLINGS", "pool"]

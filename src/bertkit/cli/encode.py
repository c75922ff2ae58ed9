"""bertkit encode: one vector per input text, written as a float32 .npy array [N, H]."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from bertkit.config import option, parse_args, required
from bertkit.data.readers import read_texts
from bertkit.encode import POOLINGS, Encoder
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data
from bertkit.inference import BACKENDS
from bertkit.outputs import atomic_path, check_output_file

log = logging.getLogger("bertkit")


@dataclass
class EncodeConfig:
    model: str | None = option(None, "model directory or fetched name, e.g. minilm (not with --server)")
    input: str = required("texts: one a line, JSONL/TSV with a `text` field, or a data name like mr:dev")
    output: str = required("where to write the vectors: a .npy file, one float32 row per text")
    pooling: str | None = option(
        None, "how token vectors become one vector (default: the model's own)", choices=POOLINGS
    )
    layer: int = option(-1, "hidden layer to pool: -1 the last, 0 the embeddings, -2 the one below the top")
    normalize: bool | None = option(None, "L2-normalise the vectors (default: the model's own)")
    batch_size: int = option(32, "texts per forward pass", at_least=1)
    max_length: int | None = option(
        None,
        "tokens per text, [CLS] and [SEP] included (default: the model's "
        "own limit); longer texts are cut, with a warning",
        at_least=2,
    )
    allow_empty: bool = option(False, "encode empty lines as empty texts instead of stopping with an error")
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    server: str | None = option(
        None,
        "encode on a running `bertkit serve` at this URL instead of loading the model here, e.g. http://127.0.0.1:8000",
    )
    backend: str = option(
        "torch", "torch, or onnx / onnx-int8 for a directory written by `bertkit export`", choices=BACKENDS
    )
    overwrite: bool = option(False, "replace --output when it already exists")


def _encode_remote(server: str, cfg: EncodeConfig, texts: list[str]) -> tuple[np.ndarray, str]:
    """Vectors from `bertkit serve`, in requests of at most `batch_size` texts (the server batches them)."""
    from bertkit.client import Client  # httpx, from the `serve` extra: only for --server

    with Client(server) as client:
        max_texts = max(1, cfg.batch_size)
        parts = [
            client.encode(texts[i : i + max_texts], pooling=cfg.pooling, layer=cfg.layer, normalize=cfg.normalize)
            for i in range(0, len(texts), max_texts)
        ]
    return np.concatenate(parts), f"server {server}"


def main(argv: list[str]) -> int:
    cfg = parse_args(EncodeConfig, argv, prog="bertkit encode")
    if (cfg.model is None) == (cfg.server is None):
        raise BertkitError(
            "pass --model DIR to encode here, or --server URL to encode on a running `bertkit serve` (not both)"
        )
    if cfg.server is not None and (cfg.max_length is not None or cfg.backend != "torch"):
        raise BertkitError("--max-length and --backend are the server's settings; drop them when using --server")
    source = resolve_data(cfg.input)
    out = check_output_file(cfg.output, [source], cfg.overwrite)
    texts = read_texts(source, allow_empty=cfg.allow_empty)
    start = time.perf_counter()
    if cfg.server is not None:
        vectors, how = _encode_remote(cfg.server, cfg, texts)
    else:
        encoder = Encoder(
            cfg.model,
            pooling=cfg.pooling,
            layer=cfg.layer,
            normalize=cfg.normalize,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
            device=cfg.device,
            backend=cfg.backend,
        )
        vectors = encoder.encode(texts, progress=True)
        how = f"pooling {encoder.pooling}, layer {encoder.layer}, normalize {encoder.normalize}"
    seconds = time.perf_counter() - start
    with atomic_path(out) as tmp:
        np.save(tmp, vectors)
    log.info(
        "%d texts -> %s %s (%s), %.1f texts/s",
        len(texts),
        out,
        list(vectors.shape),
        how,
        len(texts) / max(seconds, 1e-9),
    )
    return 0

"""bertkit encode: one vector per input text, written as a float32 .npy array [N, dim]; with
`--pooling none` a vector per token (or per word, `--words`), written as .npz or .jsonl (the layout is
in bertkit/encode/tokens.py)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertkit.config import option, parse_args, required
from bertkit.data.readers import read_texts
from bertkit.encode import POOLINGS, Encoder
from bertkit.encode.encoder import LAYER_COMBINES, LONG_TEXTS
from bertkit.encode.tokens import TokenVectors, save_jsonl, save_npz
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data
from bertkit.inference import BACKENDS
from bertkit.outputs import atomic_path, check_output_file

log = logging.getLogger("bertkit")


@dataclass
class EncodeConfig:
    model: str | None = option(None, "model directory or fetched name, e.g. minilm (not with --server)")
    input: str = required("texts: one a line, JSONL/TSV with a `text` field, or a data name like mr:dev")
    output: str = required(
        "where to write the vectors: a .npy file, one float32 row per text; with --pooling none a .npz "
        "(flat arrays) or .jsonl (a line per text) of tokens, character spans and vectors"
    )
    pooling: str | None = option(
        None,
        "how token vectors become one vector (default: the model's own); none: a vector per token",
        choices=(*POOLINGS, "none"),
    )
    layer: list[int] = option(
        [-1],
        "hidden layer to pool: -1 the last, 0 the embeddings, -2 the one below the top; "
        "several, e.g. -4,-3,-2,-1, are joined by --layer-combine",
    )
    layer_combine: str = option(
        "concat", "how several layers join: concat (width H x layers, in order) or mean", choices=LAYER_COMBINES
    )
    long: str = option(
        "cut",
        "a text over --max-length: cut there (with a warning), or window: pooled over overlapping windows",
        choices=LONG_TEXTS,
    )
    words: bool = option(False, "with --pooling none: a vector per whitespace-separated word and Chinese character")
    specials: bool = option(False, "with --pooling none: keep [CLS] and [SEP] (span [0, 0]), left out otherwise")
    normalize: bool | None = option(None, "L2-normalise the vectors (default: the model's own)")
    batch_size: int = option(32, "texts per forward pass", at_least=1)
    max_length: int | None = option(
        None,
        "tokens per text, [CLS] and [SEP] included (default: the model's "
        "own limit); longer texts are cut, with a warning, or read in windows (--long window)",
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


def _check(cfg: EncodeConfig) -> None:
    """Options that do not go together, before anything is read or loaded."""
    if (cfg.model is None) == (cfg.server is None):
        raise BertkitError(
            "pass --model DIR to encode here, or --server URL to encode on a running `bertkit serve` (not both)"
        )
    if cfg.server is not None and (cfg.max_length is not None or cfg.backend != "torch" or cfg.long != "cut"):
        raise BertkitError(
            "--max-length, --backend and --long are the server's settings; drop them when using --server"
        )
    suffix = Path(cfg.output).suffix
    if cfg.pooling == "none":
        if suffix not in (".npz", ".jsonl"):
            raise BertkitError(
                f"--pooling none writes a vector per token: give --output a .npz or .jsonl name, not {cfg.output}"
            )
        if cfg.normalize:
            raise BertkitError("token vectors are the raw hidden states: drop --normalize with --pooling none")
        if cfg.words and cfg.specials:
            raise BertkitError("--words gives the text's own words, without [CLS] and [SEP]: drop --specials")
    elif cfg.words or cfg.specials or suffix in (".npz", ".jsonl"):
        raise BertkitError(
            "--words, --specials and a .npz / .jsonl --output are for token vectors: add --pooling none "
            "(or write sentence vectors to a .npy file)"
        )


def _encode_remote(server: str, cfg: EncodeConfig, texts: list[str]) -> tuple[np.ndarray | list[TokenVectors], str]:
    """Vectors from `bertkit serve`, in requests of at most `batch_size` texts (the server batches them)."""
    from bertkit.client import Client  # httpx, from the `serve` extra: only for --server

    chunks = [texts[i : i + max(1, cfg.batch_size)] for i in range(0, len(texts), max(1, cfg.batch_size))]
    layer = cfg.layer[0] if len(cfg.layer) == 1 else cfg.layer
    with Client(server) as client:
        if cfg.pooling == "none":
            records = [
                TokenVectors(**r)
                for chunk in chunks
                for r in client.encode_tokens(
                    chunk, words=cfg.words, specials=cfg.specials, layer=layer, layer_combine=cfg.layer_combine
                )
            ]
            return records, f"server {server}"
        parts = [
            client.encode(
                chunk, pooling=cfg.pooling, layer=layer, normalize=cfg.normalize, layer_combine=cfg.layer_combine
            )
            for chunk in chunks
        ]
    return np.concatenate(parts), f"server {server}"


def main(argv: list[str]) -> int:
    cfg = parse_args(EncodeConfig, argv, prog="bertkit encode")
    _check(cfg)
    source = resolve_data(cfg.input)
    out = check_output_file(cfg.output, [source], cfg.overwrite)
    texts = read_texts(source, allow_empty=cfg.allow_empty)
    start = time.perf_counter()
    vectors: np.ndarray | list[TokenVectors]
    if cfg.server is not None:
        vectors, how = _encode_remote(cfg.server, cfg, texts)
    else:
        encoder = Encoder(
            cfg.model,
            pooling=None if cfg.pooling == "none" else cfg.pooling,
            layer=cfg.layer,
            normalize=cfg.normalize,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
            device=cfg.device,
            backend=cfg.backend,
            layer_combine=cfg.layer_combine,
            long=cfg.long,
        )
        layers = ",".join(map(str, encoder.layers)) + (f" ({cfg.layer_combine})" if len(encoder.layers) > 1 else "")
        if cfg.pooling == "none":
            vectors = encoder.encode_tokens(texts, words=cfg.words, specials=cfg.specials, progress=True)
            how = f"{'words' if cfg.words else 'tokens'}, layer {layers}, long texts {cfg.long}"
        else:
            vectors = encoder.encode(texts, progress=True)
            how = f"pooling {encoder.pooling}, layer {layers}, normalize {encoder.normalize}, long texts {cfg.long}"
    seconds = time.perf_counter() - start
    if isinstance(vectors, list):
        width = vectors[0].vectors.shape[1] if vectors else 0
        if out.suffix == ".npz":
            save_npz(out, vectors, width)
        else:
            save_jsonl(out, vectors)
        shape = [sum(len(r.tokens) for r in vectors), width]
    else:
        with atomic_path(out) as tmp:
            np.save(tmp, vectors)
        shape = list(vectors.shape)
    log.info("%d texts -> %s %s (%s), %.1f texts/s", len(texts), out, shape, how, len(texts) / max(seconds, 1e-9))
    return 0

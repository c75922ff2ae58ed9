"""bertkit encode: one vector per input text, written as a float32 .npy array [N, H]."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertkit.config import option, parse_args, required
from bertkit.encode import POOLINGS, Encoder

log = logging.getLogger("bertkit")


@dataclass
class EncodeConfig:
    model: str = required("model directory or fetched name, e.g. minilm")
    input: str = required("texts: one a line, JSONL/TSV with a `text` field, or a data name like mr:dev")
    output: str = required("where to write the vectors: a .npy file, one float32 row per text")
    pooling: str | None = option(None, "how token vectors become one vector (default: the model's own)",
                                 choices=POOLINGS)
    layer: int = option(-1, "hidden layer to pool: -1 the last, 0 the embeddings, -2 the one below the top")
    normalize: bool | None = option(None, "L2-normalise the vectors (default: the model's own)")
    batch_size: int = option(32, "texts per forward pass")
    max_length: int | None = option(None, "tokens per text, [CLS] and [SEP] included (default: the model's "
                                    "own limit); longer texts are cut, with a warning")
    allow_empty: bool = option(False, "encode empty lines as empty texts instead of stopping with an error")
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")


def main(argv: list[str]) -> int:
    from bertkit.data.readers import read_texts
    from bertkit.fetch import resolve_data

    cfg = parse_args(EncodeConfig, argv, prog="bertkit encode")
    texts = read_texts(resolve_data(cfg.input), allow_empty=cfg.allow_empty)
    encoder = Encoder(cfg.model, pooling=cfg.pooling, layer=cfg.layer, normalize=cfg.normalize,
                      max_length=cfg.max_length, batch_size=cfg.batch_size, device=cfg.device)
    start = time.perf_counter()
    vectors = encoder.encode(texts, progress=True)
    seconds = time.perf_counter() - start
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(out)
    log.info("%d texts -> %s %s (pooling %s, layer %d, normalize %s), %.1f texts/s", len(texts), out,
             list(vectors.shape), encoder.pooling, encoder.layer, encoder.normalize, len(texts) / seconds)
    return 0

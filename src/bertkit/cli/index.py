"""bertkit index build: texts -> a directory of their vectors (memory-mapped), texts and ids, for search.

    bertkit index build --model minilm --input texts.jsonl --output idx --dtype float16

See bertkit.search for the layout; `bertkit search --index idx --query "..."` reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bertkit.config import option, parse_args, required
from bertkit.encode import POOLINGS, Encoder
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data, resolve_model
from bertkit.outputs import check_output_dir, replaced_dir
from bertkit.search.build import ANN_THRESHOLD, encoded_blocks, encoder_settings, read_corpus, write_index
from bertkit.search.index import DTYPES

log = logging.getLogger("bertkit")

SUBCOMMANDS = {"build": "texts -> a search index (bertkit index build --help)"}


@dataclass
class IndexBuildConfig:
    model: str = required("model directory or fetched name, e.g. minilm")
    input: str = required(
        "texts: one a line, JSONL/TSV with a `text` field (and an optional `id`), or a data name like mr:train"
    )
    output: str = required("the index directory to write")
    dtype: str = option(
        "float32",
        "how vectors are stored: float32, float16 (half the size) or int8 (a quarter, plus one scale a vector)",
        choices=DTYPES,
    )
    texts: bool = option(True, "keep the texts beside the vectors (--no-texts: ids only, for texts kept elsewhere)")
    ann: bool | None = option(
        None,
        f"also build an approximate (faiss IVF) index; default: when there are at least --ann-threshold "
        f"({ANN_THRESHOLD:,}) texts; --no-ann never",
    )
    ann_threshold: int = option(ANN_THRESHOLD, "texts from which an approximate index is built", at_least=1)
    ann_recall: float = option(
        0.95,
        "recall@10 against exact search that the approximate index is tuned to reach (more clusters probed)",
        above=0,
        at_most=1,
    )
    pooling: str | None = option(None, "how token vectors become one (default: the model's own)", choices=POOLINGS)
    layer: int = option(-1, "hidden layer to pool: -1 the last, 0 the embeddings")
    normalize: bool | None = option(None, "L2-normalise the vectors, making scores cosines (default: the model's own)")
    max_length: int | None = option(None, "tokens per text (default: the model's own limit)", at_least=2)
    batch_size: int = option(32, "texts per forward pass", at_least=1)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    seed: int = option(0, "seed of the clustering sample and of the recall sample")
    overwrite: bool = option(False, "replace --output when it already holds files")


def build(argv: list[str]) -> int:
    cfg = parse_args(IndexBuildConfig, argv, prog="bertkit index build")
    model_dir = resolve_model(cfg.model)
    source = resolve_data(cfg.input)
    out = check_output_dir(cfg.output, [source, model_dir], cfg.overwrite)
    texts, ids = read_corpus(source, keep_texts=cfg.texts)
    encoder = Encoder(
        model_dir,
        pooling=cfg.pooling,
        layer=cfg.layer,
        normalize=cfg.normalize,
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        device=cfg.device,
    )
    settings = {**encoder_settings(encoder, cfg.model, model_dir), "input": str(source)}
    with replaced_dir(out) as tmp:
        meta = write_index(
            tmp,
            encoded_blocks(encoder, texts),
            len(texts),
            encoder.dim,
            settings,
            dtype=cfg.dtype,
            texts=texts if cfg.texts else None,
            ids=ids,
            ann=cfg.ann,
            ann_threshold=cfg.ann_threshold,
            target_recall=cfg.ann_recall,
            seed=cfg.seed,
        )
    log.info(
        "%d texts -> %s (%s [%d, %d], pooling %s, normalize %s%s) in %.1f s",
        meta["count"],
        out,
        meta["dtype"],
        meta["count"],
        meta["dim"],
        meta["pooling"],
        meta["normalize"],
        f", approximate index with recall@10 {meta['ann']['recall_at_10']:.3f}" if meta["ann"] else "",
        meta["build_seconds"],
    )
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: bertkit index SUBCOMMAND [options]\n\nsubcommands:")
        for name, text in SUBCOMMANDS.items():
            print(f"  {name:<8} {text}")
        return 0
    if argv[0] not in SUBCOMMANDS:
        raise BertkitError(
            f"unknown subcommand `{argv[0]}`: use `bertkit index build --model M --input TEXTS --output IDX`"
        )
    return build(argv[1:])

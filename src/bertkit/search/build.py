"""Texts -> an index directory (`bertkit index build`), and the encoder that reads queries for it.

The query must be encoded as the indexed texts were: the same weights, pooling, layer, normalisation
and token limit. index.json keeps all of them, the weights as a sha256, so an index is searched with
its own model's settings and a different model is refused by name.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bertkit.data.readers import read_records
from bertkit.encode.encoder import Encoder
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.search.index import Index, VectorWriter, write_meta, write_strings

log = logging.getLogger("bertkit")

ENCODE_ROWS = 4096  # texts encoded, then written, at a time
ANN_THRESHOLD = 100_000  # from this many vectors an approximate index is built unless --no-ann
MODEL_FILES = ("config.json", "vocab.txt", "model.safetensors", "pytorch_model.bin")


def model_sha256(model_dir: str | Path) -> str:
    """sha256 over a model directory's config, vocabulary and weights (sharded weights included)."""
    d = Path(model_dir)
    files = [d / f for f in MODEL_FILES if (d / f).is_file()]
    files += sorted(d.glob("model-*-of-*.safetensors"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def read_corpus(path: str | Path, keep_texts: bool = True) -> tuple[list[str], list[str] | None]:
    """The texts of a file (one a line, JSONL/TSV/CSV with `text`) and their ids when records have an
    `id`: every record or none, each id once."""
    texts: list[str] = []
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, record in read_records(path):
        text = record.get("text")
        if not isinstance(text, str):
            found = ", ".join(record) or "nothing"
            raise BertkitError(f"{path}, line {number}: no `text` string (found: {found}); each record needs one")
        if not text.strip():
            raise BertkitError(f"{path}, line {number}: empty text; remove the line")
        has_id = "id" in record and record["id"] not in (None, "")
        if texts and has_id != bool(ids):
            raise BertkitError(
                f"{path}, line {number}: {'an' if has_id else 'no'} `id`, unlike the lines before it; give "
                "every record an id, or none (hits are then named by their row)"
            )
        if has_id:
            key = str(record["id"])
            if key in first_line:
                raise BertkitError(
                    f"{path}, line {number}: id {key!r} is also on line {first_line[key]}; give each text its own id"
                )
            first_line[key] = number
            ids.append(key)
        texts.append(text)
    if not texts:
        raise BertkitError(f"{path} holds no texts")
    if not keep_texts and not ids:
        raise BertkitError(
            f"--no-texts: {path} has no `id` field, so hits could name rows only; add ids "
            '(JSONL {"id": "...", "text": "..."}) or keep the texts'
        )
    return texts, ids or None


def write_index(
    out: Path,
    blocks: Iterable[np.ndarray],
    count: int,
    dim: int,
    meta: dict,
    dtype: str = "float32",
    texts: Iterable[str] | None = None,
    ids: Iterable[str] | None = None,
    ann: bool | None = None,
    ann_threshold: int = ANN_THRESHOLD,
    target_recall: float = 0.95,
    seed: int = 0,
) -> dict:
    """Write an index into the empty directory `out` from float32 `blocks` of consecutive rows
    ([C, D] each, `count` rows in all); `meta` says what made the vectors. An approximate index is
    built when `ann`, or when `ann` is None and `count` reaches `ann_threshold`. Returns index.json."""
    start = time.perf_counter()
    writer = VectorWriter(out, count, dim, dtype)
    for block in blocks:
        writer.add(block)
    writer.close()
    if texts is not None and write_strings(out, "texts", texts) != count:
        raise BertkitError(f"{count} vectors but another number of texts: give one text per vector")
    if ids is not None and write_strings(out, "ids", ids) != count:
        raise BertkitError(f"{count} vectors but another number of ids: give one id per vector")
    meta = {**meta, "dim": dim, "count": count, "dtype": dtype, "texts": texts is not None, "ids": ids is not None}
    meta["ann"] = None
    if ann or (ann is None and count >= ann_threshold):
        from bertkit.search.ann import build_ann  # faiss: the `search` extra, only for an approximate index

        ann_start = time.perf_counter()
        vectors = np.load(out / "vectors.npy", mmap_mode="r")
        scales = np.load(out / "scales.npy") if dtype == "int8" else None
        a = build_ann(vectors, scales, dtype, out / "ann.faiss", np.random.default_rng(seed), target_recall)
        meta["ann"] = a = {**a, "build_seconds": round(time.perf_counter() - ann_start, 2)}
        log.info(
            "approximate index (%s, %d lists, probing %d): recall@10 %.3f against exact search on %d indexed "
            "vectors, built in %.1f s",
            a["kind"],
            a["nlist"],
            a["nprobe"],
            a["recall_at_10"],
            a["recall_sample"],
            a["build_seconds"],
        )
    meta["build_seconds"] = round(time.perf_counter() - start, 2)
    write_meta(out, meta)
    return meta


def encoder_settings(encoder: Encoder, model: str, model_dir: Path) -> dict:
    """What index.json keeps of the encoder, so queries are read the same way."""
    return {
        "model": model,
        "model_dir": str(model_dir.resolve()),
        "model_sha256": model_sha256(model_dir),
        "pooling": encoder.pooling,
        "layer": encoder.layer,
        "normalize": encoder.normalize,
        "max_length": encoder.max_length,
    }


def encoded_blocks(encoder: Encoder, texts: list[str]) -> Iterator[np.ndarray]:
    bar = tqdm(total=len(texts), desc="index", unit="text")
    for start in range(0, len(texts), ENCODE_ROWS):
        block = encoder.encode(texts[start : start + ENCODE_ROWS])
        bar.update(len(block))
        yield block
    bar.close()


def check_model(index: Index, model_dir: Path, flag: str = "--model") -> None:
    """Refuse to read queries for `index` with a model other than the one that built it."""
    want = index.meta.get("model_sha256")
    if want is not None and model_sha256(model_dir) != want:
        raise BertkitError(
            f"{flag} {model_dir} is not the model that built the index {index.path} "
            f"({index.meta.get('model')}, {index.meta.get('model_dir')}): queries must be read by the same "
            f"weights; pass that model, or rebuild the index with `bertkit index build --model {model_dir}`"
        )


def query_encoder(index: Index, model: str | None = None, device: str | None = None, batch_size: int = 32) -> Encoder:
    """An Encoder with the index's model and settings; `model` when the model has moved since."""
    name = model or index.meta["model_dir"]
    if model is None and not Path(name).is_dir():
        name = index.meta["model"]  # the directory is gone: a fetched name still resolves
    model_dir = resolve_model(name)
    check_model(index, model_dir)
    return Encoder(
        model_dir,
        pooling=index.meta["pooling"],
        layer=index.meta["layer"],
        normalize=index.meta["normalize"],
        max_length=index.meta["max_length"],
        batch_size=batch_size,
        device=device,
    )

"""Build pretraining data: raw text -> tokenized documents -> NSP pairs or packed sequences -> masks ->
memory-mapped shards (the format is described in bertkit.data.pretraining).

The corpus is cut into chunks of about `chunk_mb` at document boundaries (bertkit.data.corpus) and
each chunk becomes one shard, built by one worker process with its own random stream,
random.Random("seed:chunk"). Nothing a chunk produces depends on the other chunks or on the number of
workers, so any `workers` gives byte-identical shards. The price: the random B of an NSP pair comes
from another document of the same chunk, not of the whole corpus (NVIDIA's BERT scripts shard the
same way); a 1 MB chunk still holds hundreds of documents.

Within a chunk google-research/bert's order is kept: shuffle the documents, make `dupe_factor` passes
over them (each with new NSP pairs, and new masks when masking is static), shuffle the sequences.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bertkit.config import option
from bertkit.data.corpus import FORMATS, MAX_EXAMPLES, Chunk, plan_chunks, read_chunk
from bertkit.data.instances import Instance, nsp_instances, packed_instances
from bertkit.data.masking import WHOLE_WORD_MODES, continuation_table, jieba_starts, mask_tokens, wordpiece_starts
from bertkit.data.pretraining import FORMAT, FORMAT_VERSION, INDEX, PretrainingData, shard_file
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data, resolve_model
from bertkit.outputs import atomic_write_text, check_output_dir
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer

log = logging.getLogger("bertkit")

# Statistics summed over chunks; the *_examples lists are concatenated (first MAX_EXAMPLES kept).
_COUNTS = (
    "documents",
    "sentences",
    "corpus_tokens",
    "instances",
    "tokens",
    "empty_documents",
    "one_sentence_documents",
    "long_sentences",
    "bad_lines",
    "truncated_pairs",
    "nsp_random",
    "masked",
    "maskable",
)


@dataclass
class BuildSettings:
    """How sequences are made from the text; saved in index.json."""

    max_seq_length: int = option(128, "tokens per sequence, [CLS] and [SEP] included", at_least=8)
    max_predictions: int = option(
        20, "most masked positions per sequence (google-research: 20 for 128, 80 for 512)", at_least=1
    )
    masked_lm_prob: float = option(0.15, "share of the (non-special) tokens to predict", above=0, at_most=1)
    short_seq_prob: float = option(
        0.1, "share of NSP sequences given a shorter random target length", at_least=0, at_most=1
    )
    dupe_factor: int = option(
        5,
        "passes over the text, each with new NSP pairs (and new masks when static; "
        "without NSP the packing is the same every pass); google-research uses 10",
        at_least=1,
    )
    nsp: bool = option(
        True,
        "sentence pairs with next-sentence labels (BERT); --no-nsp packs full sentences "
        "across documents into one segment (RoBERTa's FULL-SENTENCES)",
    )
    masking: str = option(
        "static", "static: masked once here; dynamic: masked anew every epoch when read", choices=("static", "dynamic")
    )
    whole_word: str = option(
        "auto",
        "mask whole words: wordpiece (## pieces join their word), jieba (Chinese "
        "words from jieba), none (single tokens); auto: jieba for Chinese text",
        choices=WHOLE_WORD_MODES,
    )
    format: str = option(
        "auto",
        "input layout: sentences (one a line, blank line between documents) or "
        "paragraphs (one document a line); auto decides per file",
        choices=FORMATS,
    )
    seed: int = option(12345, "random seed: the same seed and inputs give byte-identical shards")
    chunk_mb: float = option(1.0, "MB of text per chunk (one shard, one unit of work for a worker)", above=0)
    lowercase: bool | None = option(
        None, "lower-case the text (default: the vocab's tokenizer_config.json, else inferred from the vocab)"
    )

    def check(self) -> None:
        problems = []
        if not 8 <= self.max_seq_length <= 32767:  # lengths are int16
            problems.append(f"max_seq_length must be in 8..32767, got {self.max_seq_length}")
        if not 1 <= self.max_predictions <= self.max_seq_length:
            problems.append(f"max_predictions must be in 1..max_seq_length, got {self.max_predictions}")
        if not 0 < self.masked_lm_prob < 1:
            problems.append(f"masked_lm_prob must be between 0 and 1, got {self.masked_lm_prob}")
        if not 0 <= self.short_seq_prob <= 1:
            problems.append(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.dupe_factor < 1:
            problems.append(f"dupe_factor must be at least 1, got {self.dupe_factor}")
        if self.chunk_mb <= 0:
            problems.append(f"chunk_mb must be positive, got {self.chunk_mb}")
        if problems:
            raise BertkitError("; ".join(problems))


@dataclass
class _Job:
    """What every worker needs besides its chunk (pickled to spawned processes)."""

    settings: BuildSettings
    vocab_file: str
    lowercase: bool
    whole_word: str
    output: str


def build_pretraining_data(
    inputs: list[str | Path],
    vocab: str | Path,
    output: str | Path,
    settings: BuildSettings | None = None,
    workers: int = 1,
    overwrite: bool = False,
) -> dict:
    """Build a pretraining data directory from text files; returns its index (with the statistics).

    `inputs`: text files or data names (corpus-en); `vocab`: a vocab.txt, a model directory or a fetched
    model name (minilm, zh-vocab). With workers > 1 the workers are spawned processes, so a script that
    calls this must guard its top level with `if __name__ == "__main__":` (the CLI does)."""
    settings = settings or BuildSettings()
    settings.check()
    if workers < 1:
        raise BertkitError(f"workers must be at least 1, got {workers}")
    vocab_file = Path(vocab) if Path(vocab).is_file() else resolve_model(str(vocab)) / "vocab.txt"
    tokenizer = BertTokenizer.from_vocab(vocab_file, lowercase=settings.lowercase)
    paths = [resolve_data(str(p)) for p in inputs]
    if not paths:
        raise BertkitError("no input files: give one or more with --input")
    out = _prepare_output(Path(output), overwrite)
    whole_word = settings.whole_word if settings.whole_word != "auto" else _guess_whole_word(paths[0])
    chunks = plan_chunks(paths, settings.format, max(1, int(settings.chunk_mb * 2**20)))
    job = _Job(settings, str(vocab_file), tokenizer.lowercase, whole_word, str(out))

    start = time.perf_counter()
    workers = min(workers, len(chunks)) or 1
    log.info("%d chunks of %s, %d worker%s", len(chunks), ", ".join(map(str, paths)), workers, "s" * (workers > 1))
    if workers == 1:
        results = [_build_chunk((job, chunk)) for chunk in _bar(chunks, len(chunks))]
    else:
        # spawn, not fork: the parent has used the tokenizers library, whose threads do not survive a fork.
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_quiet_worker) as pool:
            results = list(_bar(pool.imap(_build_chunk, [(job, chunk) for chunk in chunks]), len(chunks)))
    seconds = time.perf_counter() - start

    stats = _combine([r["stats"] for r in results], settings)
    if stats["bad_lines"]:
        log.warning(
            "skipped %d lines that are not UTF-8:\n  %s", stats["bad_lines"], "\n  ".join(stats["bad_line_examples"])
        )
    if not stats["instances"]:
        raise BertkitError(
            f"no sequences could be made from {', '.join(map(str, paths))}: {stats['documents']} "
            f"documents with text, {stats['bad_lines']} lines not UTF-8; give files of UTF-8 text"
        )
    index: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "vocab_size": tokenizer.vocab_size,
        "vocab_file": str(vocab_file),
        "vocab_sha256": hashlib.sha256(vocab_file.read_bytes()).hexdigest(),
        "lowercase": tokenizer.lowercase,
        "special_ids": {t.strip("[]").lower(): tokenizer.vocab[t] for t in SPECIAL_TOKENS},
        # What the reader needs at the top; every setting (as given, whole_word before `auto` was
        # resolved) under "settings".
        "max_seq_length": settings.max_seq_length,
        "max_predictions": settings.max_predictions,
        "masked_lm_prob": settings.masked_lm_prob,
        "masking": settings.masking,
        "nsp": settings.nsp,
        "whole_word": whole_word,
        "seed": settings.seed,
        "settings": asdict(settings),
        "inputs": [{"path": str(p), "format": c} for p, c in _layouts(paths, chunks)],
        "arrays": {"input_ids": np.dtype(_ids_dtype(tokenizer.vocab_size)).name},
        "shards": [{"name": r["name"], "count": r["count"], "source": r["source"]} for r in results if r["count"]],
        "stats": stats,
    }
    _write_index(out, index)
    if settings.masking == "dynamic":  # what epoch 0 will mask, measured on the first sequences
        stats["masked_fraction"] = _dynamic_masked_fraction(PretrainingData(out))
        _write_index(out, index)
    log.info(
        "%s: %s sequences in %d shards, %.1f s (%.0f sequences/s)",
        out,
        f"{stats['instances']:,}",
        len(index["shards"]),
        seconds,
        stats["instances"] / max(seconds, 1e-9),
    )
    return index


def describe(stats: dict) -> str:
    """The statistics as lines for people."""
    lines = [
        f"documents {stats['documents']:,} (empty {stats['empty_documents']:,}, one sentence "
        f"{stats['one_sentence_documents']:,}), sentences {stats['sentences']:,}, "
        f"corpus tokens {stats['corpus_tokens']:,}",
        f"sequences {stats['instances']:,}, tokens {stats['tokens']:,}, masked fraction "
        f"{stats['masked_fraction']:.4f}, truncated pairs {stats['truncated_share']:.3f}, "
        f"NSP random {stats['nsp_random_share']:.3f}",
        f"long sentences cut {stats['long_sentences']:,}, bad lines skipped {stats['bad_lines']:,}",
    ]
    lines += [f"  {example}" for example in stats["bad_line_examples"] + stats["long_sentence_examples"]]
    return "\n".join(lines)


def _bar(items, total: int):
    """Chunks as they finish, with a progress bar on a terminal (none in logs or captured output)."""
    return tqdm(items, total=total, desc="pretrain-data", unit="chunk", disable=None)


def _prepare_output(out: Path, overwrite: bool) -> Path:
    """An empty directory to write to; with `overwrite`, a previous (or unfinished) build's files are
    removed first, and nothing else ever is."""
    check_output_dir(out, overwrite=True)  # a file, an unwritable place; the rest is checked below
    entries = list(out.iterdir()) if out.is_dir() else []
    ours = [p for p in entries if p.name == INDEX or p.match("shard-*.npy") or p.match(f".{INDEX}.tmp-*")]
    if len(ours) < len(entries):
        raise BertkitError(f"--output {out} holds files that are not pretraining data; give a new or empty directory")
    if ours and not overwrite:
        raise BertkitError(
            f"--output {out} already holds pretraining data (or an unfinished build); pass --overwrite to replace it"
        )
    for path in ours:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _guess_whole_word(path: Path) -> str:
    """jieba when more than 30% of the first 64 KB's visible characters are CJK, else wordpiece."""
    with open(path, "rb") as f:
        text = f.read(1 << 16).decode("utf-8", errors="ignore")
    visible = [c for c in text if not c.isspace()]
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in visible)
    return "jieba" if visible and cjk > 0.3 * len(visible) else "wordpiece"


def _layouts(paths, chunks: list[Chunk]):
    layout = {c.path: c.layout for c in chunks}
    return [(p, layout.get(str(p), "empty")) for p in paths]


def _ids_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.int32


def _quiet_worker() -> None:
    # The worker processes already fill the cores; the library's own threads would only contend.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


_TOKENIZERS: dict = {}


def _tokenizer(vocab_file: str, lowercase: bool) -> BertTokenizer:
    """One tokenizer per process (a worker builds many chunks)."""
    key = (vocab_file, lowercase)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = BertTokenizer.from_vocab(vocab_file, lowercase=lowercase)
    return _TOKENIZERS[key]


def _build_chunk(args: tuple[_Job, Chunk]) -> dict:
    """Read, tokenize, pair and mask one chunk; write its shard; return its count and statistics."""
    job, chunk = args
    s = job.settings
    tokenizer = _tokenizer(job.vocab_file, job.lowercase)
    stats = dict.fromkeys(_COUNTS, 0)
    documents, examples = _tokenize(chunk, tokenizer, job, stats)
    rng = random.Random(f"{s.seed}:{chunk.index}")
    rng.shuffle(documents)
    instances: list[Instance] = []
    for _ in range(s.dupe_factor):
        if s.nsp:
            for d in range(len(documents)):
                instances += nsp_instances(
                    documents, d, s.max_seq_length, s.short_seq_prob, rng, tokenizer.cls_id, tokenizer.sep_id
                )
        else:
            instances += packed_instances(documents, s.max_seq_length, tokenizer.cls_id, tokenizer.sep_id)
    rng.shuffle(instances)
    name = f"shard-{chunk.index:05d}"
    if instances:
        arrays = _to_arrays(instances, tokenizer, s, rng, stats)
        for array_name, array in arrays.items():
            np.save(shard_file(Path(job.output), name, array_name), array)
    stats.update(
        examples,
        instances=len(instances),
        tokens=sum(len(x.ids) for x in instances),
        truncated_pairs=sum(x.truncated for x in instances),
        nsp_random=sum(x.nsp_label == 1 for x in instances),
    )
    return {"name": name, "count": len(instances), "source": f"{chunk.path}:{chunk.first_line}", "stats": stats}


def _tokenize(chunk: Chunk, tokenizer: BertTokenizer, job: _Job, stats: dict):
    """The chunk's documents as lists of (ids, word starts); empty sentences and documents dropped, a
    sentence longer than a sequence cut to fit (and named by file:line)."""
    text = read_chunk(chunk)
    budget = job.settings.max_seq_length - (3 if job.settings.nsp else 2)
    flat = [sentence for document in text.documents for _, sentence in document]
    # The library's batch call tokenizes in parallel threads; specials are added later, per sequence.
    encodings = iter(tokenizer._tk.encode_batch(flat, add_special_tokens=False))
    is_continuation = continuation_table(tokenizer.vocab)
    long_examples: list[str] = []
    documents = []
    for document in text.documents:
        sentences = []
        for line, sentence in document:
            enc = next(encodings)
            ids = enc.ids
            if not ids:
                continue
            if job.whole_word == "jieba":
                starts = jieba_starts(sentence, enc.offsets, is_continuation[ids].tolist())
            elif job.whole_word == "wordpiece":
                starts = wordpiece_starts(ids, is_continuation)
            else:
                starts = [True] * len(ids)
            if len(ids) > budget:
                stats["long_sentences"] += 1
                if len(long_examples) < MAX_EXAMPLES:
                    long_examples.append(f"{chunk.path}:{line}: sentence of {len(ids)} tokens cut to {budget}")
                ids, starts = ids[:budget], starts[:budget]
            sentences.append((ids, starts))
            stats["corpus_tokens"] += len(ids)
        if not sentences:
            stats["empty_documents"] += 1
            continue
        stats["one_sentence_documents"] += len(sentences) == 1
        stats["sentences"] += len(sentences)
        documents.append(sentences)
    stats["documents"] = len(documents)
    stats["bad_lines"] = text.bad.count
    return documents, {"bad_line_examples": text.bad.examples, "long_sentence_examples": long_examples}


def _to_arrays(
    instances: list[Instance], tokenizer: BertTokenizer, s: BuildSettings, rng: random.Random, stats: dict
) -> dict[str, np.ndarray]:
    """Padded arrays for one shard (shapes in bertkit.data.pretraining); static masking happens here."""
    n, length, p = len(instances), s.max_seq_length, s.max_predictions
    special = {tokenizer.vocab[t] for t in SPECIAL_TOKENS}
    arrays = {
        "input_ids": np.full((n, length), tokenizer.pad_id, _ids_dtype(tokenizer.vocab_size)),
        "token_type_ids": np.zeros((n, length), np.int8),
        "lengths": np.array([len(x.ids) for x in instances], np.int16),
    }
    if s.nsp:
        arrays["nsp_labels"] = np.array([x.nsp_label for x in instances], np.int8)
    if s.masking == "static":
        arrays["masked_positions"] = np.full((n, p), -1, np.int16)
        arrays["masked_ids"] = np.full((n, p), -100, np.int32)
    else:
        arrays["word_starts"] = np.zeros((n, length), bool)
    for k, x in enumerate(instances):
        m = len(x.ids)
        arrays["token_type_ids"][k, :m] = x.type_ids
        if s.masking == "static":
            masked, positions, labels = mask_tokens(
                x.ids, x.starts, tokenizer.vocab_size, special, rng, s.masked_lm_prob, p, mask_id=tokenizer.mask_id
            )
            arrays["input_ids"][k, :m] = masked
            arrays["masked_positions"][k, : len(positions)] = positions
            arrays["masked_ids"][k, : len(labels)] = labels
            stats["masked"] += len(positions)
            stats["maskable"] += m - sum(map(special.__contains__, x.ids))
        else:
            arrays["input_ids"][k, :m] = x.ids
            arrays["word_starts"][k, :m] = x.starts
    return arrays


def _combine(parts: list[dict], settings: BuildSettings) -> dict:
    stats = {key: sum(p[key] for p in parts) for key in _COUNTS}
    for key in ("bad_line_examples", "long_sentence_examples"):
        stats[key] = [e for p in parts for e in p[key]][:MAX_EXAMPLES]
    n = max(stats["instances"], 1)
    stats["masked_fraction"] = stats["masked"] / max(stats["maskable"], 1)
    stats["truncated_share"] = stats["truncated_pairs"] / n
    stats["nsp_random_share"] = stats["nsp_random"] / n if settings.nsp else 0.0
    return stats


def _dynamic_masked_fraction(data: PretrainingData, sample: int = 2000) -> float:
    masked = maskable = 0
    for i in range(min(sample, len(data))):
        feature = data.feature(i, epoch=0)
        original = list(feature["input_ids"])
        for position, token in zip(feature["masked_positions"], feature["masked_ids"]):
            original[position] = token
        masked += len(feature["masked_positions"])
        maskable += sum(t not in data.special_ids for t in original)
    return masked / max(maskable, 1)


def _write_index(out: Path, index: dict) -> None:
    """index.json last and atomically: its presence means the shards it lists are complete."""
    atomic_write_text(out / INDEX, json.dumps(index, indent=2, ensure_ascii=False) + "\n")

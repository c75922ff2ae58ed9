"""Pretraining data on disk, and the reader training uses: `PretrainingData`.

`bertkit pretrain-data` (bertkit.data.build_pretraining) writes a directory:

  index.json                      what was built and how (see FORMAT_VERSION below), plus statistics
  shard-00000.input_ids.npy       [N, L] uint16 (int32 when the vocab has more than 65,536 tokens),
                                  padded with [PAD]; static masking stores the MASKED ids here
  shard-00000.token_type_ids.npy  [N, L] int8, 0 for [CLS] A [SEP], 1 for B [SEP]
  shard-00000.lengths.npy         [N] int16, real tokens of each sequence
  shard-00000.nsp_labels.npy      [N] int8, NSP only: 0 = B continues A (IsNext), 1 = B is random;
                                  the convention of Hugging Face's BertForPreTraining `next_sentence_label`
  static masking:
  shard-00000.masked_positions.npy [N, P] int16, ascending, -1 past the sequence's count
  shard-00000.masked_ids.npy      [N, P] int32, the ORIGINAL ids at those positions, -100 past the count
  dynamic masking:
  shard-00000.word_starts.npy     [N, L] bool, where whole words start; masks are drawn at read time

(N = sequences in the shard, L = max_seq_length, P = max_predictions.) One shard per input chunk;
arrays are opened memory-mapped, so opening a large corpus costs nothing until sequences are read.
Dynamic masking (RoBERTa) re-masks a sequence every epoch with a generator seeded from
(seed, epoch, index): every epoch sees new masks, yet any run, resumed or on any number of
ranks, sees the same ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from bertkit.data.masking import mask_tokens
from bertkit.errors import BertkitError

__all__ = ["PretrainingData", "mask_tokens", "FORMAT", "FORMAT_VERSION", "INDEX"]

FORMAT = "bertkit-pretraining-data"
FORMAT_VERSION = 1
INDEX = "index.json"


def shard_file(directory: Path, shard: str, array: str) -> Path:
    return Path(directory) / f"{shard}.{array}.npy"


def read_index(directory: str | Path) -> dict:
    """index.json of a pretraining data directory, checked for format and version."""
    path = Path(directory) / INDEX
    if not path.is_file():
        raise BertkitError(
            f"{path} not found: {directory} is not a pretraining data directory (or its build "
            "did not finish); build one with `bertkit pretrain-data --input FILES --vocab VOCAB "
            f"--output {directory}`"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON ({e}); rebuild the data with `bertkit pretrain-data`") from None
    if index.get("format") != FORMAT:
        raise BertkitError(
            f"{path}: format is {index.get('format')!r}, expected {FORMAT!r}; this is not bertkit pretraining data"
        )
    if index.get("version") != FORMAT_VERSION:
        raise BertkitError(
            f"{path}: format version {index.get('version')}, this bertkit reads version "
            f"{FORMAT_VERSION}; rebuild the data with this version's `bertkit pretrain-data`"
        )
    return index


class PretrainingData:
    """The sequences of a pretraining data directory, memory-mapped, as features for the MLM (+NSP) loss."""

    def __init__(self, directory: str | Path, vocab_size: int | None = None):
        self.directory = Path(directory)
        self.index = index = read_index(self.directory)
        if vocab_size is not None and vocab_size != index["vocab_size"]:
            raise BertkitError(
                f"{self.directory / INDEX} was built with a vocab of {index['vocab_size']} tokens "
                f"({index['vocab_file']}), but the model's vocab has {vocab_size}; rebuild the data with the "
                "model's vocab.txt (`bertkit pretrain-data --vocab MODEL_DIR`) or train a model with that vocab"
            )
        self.nsp: bool = index["nsp"]
        self.dynamic: bool = index["masking"] == "dynamic"
        self.max_seq_length: int = index["max_seq_length"]
        self.max_predictions: int = index["max_predictions"]
        self.vocab_size: int = index["vocab_size"]
        self.seed: int = index["seed"]
        self.special_ids = set(index["special_ids"].values())
        self.mask_id: int = index["special_ids"]["mask"]
        names = (
            ["input_ids", "token_type_ids", "lengths"]
            + (["nsp_labels"] if self.nsp else [])
            + (["word_starts"] if self.dynamic else ["masked_positions", "masked_ids"])
        )
        self._shards = [{name: self._open(shard, name) for name in names} for shard in index["shards"]]
        counts = [shard["count"] for shard in index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first index of each shard
        # lengths: [N] real tokens per sequence, for length-grouped batching; small, so read into memory.
        self.lengths = (
            np.concatenate([s["lengths"] for s in self._shards]).astype(np.int64)
            if self._shards
            else np.zeros(0, np.int64)
        )

    def _open(self, shard: dict, name: str) -> np.ndarray:
        path = shard_file(self.directory, shard["name"], name)
        if not path.is_file():
            raise BertkitError(
                f"{path} is missing although {self.directory / INDEX} lists shard {shard['name']}; "
                "the directory is incomplete: rebuild it with `bertkit pretrain-data`"
            )
        array = np.load(path, mmap_mode="r")
        if array.shape[0] != shard["count"]:
            raise BertkitError(
                f"{path} holds {array.shape[0]} rows but {INDEX} says {shard['count']}; "
                "the directory mixes two builds: rebuild it with `bertkit pretrain-data`"
            )
        return array

    def __getstate__(self) -> dict:
        # Pickling a memory map copies its data; a DataLoader worker started by spawn reopens the files.
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])  # type: ignore[misc]  # reopen the memory maps after unpickling

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, i: int) -> tuple[dict, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"sequence {i} out of range: {self.directory} holds {len(self)}")
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._shards[s], i - int(self._starts[s])

    def feature(self, i: int, epoch: int = 0) -> dict:
        """Sequence `i`, unpadded: input_ids (masked), token_type_ids, masked_positions, masked_ids (the
        original ids there) and nsp_label (NSP data only). Dynamic data is masked here, from
        (seed, epoch, i); static data was masked at build time and `epoch` changes nothing."""
        shard, j = self._locate(i)
        n = int(shard["lengths"][j])
        out = {"token_type_ids": shard["token_type_ids"][j, :n].tolist()}
        if self.dynamic:
            ids = shard["input_ids"][j, :n].tolist()
            starts = shard["word_starts"][j, :n].tolist()
            # A string seed is hashed with SHA-512 by `random`: stable across runs and processes.
            rng = random.Random(f"{self.seed}:{epoch}:{i}")
            masked, positions, labels = mask_tokens(
                ids,
                starts,
                self.vocab_size,
                self.special_ids,
                rng,
                self.index["masked_lm_prob"],
                self.max_predictions,
                mask_id=self.mask_id,
            )
        else:
            masked = shard["input_ids"][j, :n].tolist()
            count = int((shard["masked_ids"][j] != -100).sum())
            positions = shard["masked_positions"][j, :count].tolist()
            labels = shard["masked_ids"][j, :count].tolist()
        out.update(input_ids=masked, masked_positions=positions, masked_ids=labels)
        if self.nsp:
            out["nsp_label"] = int(shard["nsp_labels"][j])
        return out

    def shard_of(self, rank: int, world_size: int) -> list[int]:
        """The sequence indices rank `rank` of `world_size` reads: contiguous blocks (neighbouring rows of
        the same memory-mapped files), disjoint, together covering all; sizes differ by at most one."""
        if not 0 <= rank < world_size:
            raise BertkitError(f"rank {rank} is outside world size {world_size}")
        n = len(self)
        return list(range(rank * n // world_size, (rank + 1) * n // world_size))

    def __repr__(self) -> str:
        return (
            f"PretrainingData({str(self.directory)!r}: {len(self)} sequences of <= {self.max_seq_length} "
            f"tokens, {'dynamic' if self.dynamic else 'static'} masking, nsp={self.nsp})"
        )

"""Fine-tuning tasks: small objects behind one protocol, all trained by `bertkit.train.loop`.

A task knows how to read its data (with errors naming file and line), turn examples into model
features, build its head, compute its loss, decode predictions and score them. It knows nothing about
optimisers or checkpoints; the loop knows nothing about labels or spans.

A *feature* is a dict of plain lists/numbers: `input_ids`, `token_type_ids`, `example` (the index of
the example it came from: long inputs give several windows) and the task's targets.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class Task(Protocol):
    name: str
    main_metric: str  # the dev metric that picks the best checkpoint (higher is better)

    def read(self, path: str) -> list[dict]:
        """Examples from a file; malformed records are a BertkitError naming file and line."""

    def read_inputs(self, path: str) -> list[dict]:
        """Unlabelled examples for `bertkit predict` (labels, if present, are ignored)."""

    def fit(self, train: list[dict]) -> None:
        """Learn what the data defines (the label set) from the training examples."""

    def check(self, examples: list[dict], source: str) -> None:
        """Reject examples the fitted task cannot score (e.g. a dev label train never saw)."""

    def featurize(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        """Model inputs and targets; an over-long example becomes several overlapping windows."""

    def build_model(self, config) -> nn.Module:
        """The head on a fresh encoder (weights are loaded by the caller)."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """Raw outputs for one batch, on the CPU, ready for `decode`."""

    def decode(self, outputs: list, features: list[dict], examples: list[dict]) -> list[dict]:
        """One prediction per example (windows merged), JSON-serialisable."""

    def metrics(self, predictions: list[dict], examples: list[dict]) -> dict[str, float]: ...

    def state(self) -> dict:
        """What `task.json` stores so the task can be rebuilt for evaluate/predict."""


def windows(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) spans of at most `size` covering range(length), each step `stride`.

    One span when the text fits; otherwise spans start every `stride` tokens and the last one is
    aligned to the end, so every token is covered and none is silently cut.
    """
    if length <= size:
        return [(0, length)]
    stride = max(1, min(stride, size))
    starts = list(range(0, length - size, stride)) + [length - size]
    return [(s, s + size) for s in starts]


def build_input(tokenizer, a: list[int], b: list[int] | None = None) -> tuple[list[int], list[int]]:
    """[CLS] a [SEP] (b [SEP]) -> (input_ids, token_type_ids)."""
    ids = [tokenizer.cls_id] + a + [tokenizer.sep_id]
    types = [0] * len(ids)
    if b is not None:
        ids += b + [tokenizer.sep_id]
        types += [1] * (len(b) + 1)
    return ids, types


# name -> (module, class); modules are imported on use so `bertkit predict` for one task loads only it.
TASKS = {
    "classify": ("bertkit.tasks.classify", "ClassifyTask"),
    "regression": ("bertkit.tasks.classify", "RegressionTask"),
    "ner": ("bertkit.tasks.ner", "NerTask"),
    "qa": ("bertkit.tasks.qa", "QATask"),
}


def get_task(name: str, **kwargs):
    """A task by name (see TASKS); unknown names suggest the closest."""
    import importlib

    from bertkit.errors import BertkitError, suggest

    if name not in TASKS:
        raise BertkitError(f"unknown task `{name}`{suggest(name, TASKS)}; use one of: {', '.join(TASKS)}")
    module, cls = TASKS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)

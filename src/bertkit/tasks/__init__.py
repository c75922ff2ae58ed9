"""Fine-tuning tasks: small objects behind one contract (`Task`), all trained by `bertkit.train.loop`.

A task knows how to read its data (with errors naming file and line), turn examples into model
features, build its head, compute its loss, decode predictions and score them. It knows nothing about
optimisers or checkpoints; the loop knows nothing about labels or spans.

A *feature* is a dict of plain lists/numbers: `input_ids`, `token_type_ids`, `example` (the index of
the example it came from: long inputs give several windows) and the task's targets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.data.collate import length_grouped_batches
from bertkit.errors import BertkitError, suggest

Feature = dict[str, Any]
"""One model input (a text, or one window of a long text) and its targets: `input_ids` ([CLS] ... [SEP]
(... [SEP])), `token_type_ids` (0 for the first segment, 1 for the second), `example` (the index of the
example it came from: several windows share one) and the task's targets (`label`: a class index, a
float, per-token labels; QA's `start`/`end`), plain lists and numbers that `collate` makes tensors of."""

Example = dict[str, Any]
"""A task's unit of data as its `read` returns it: every task's examples carry `line` and `source` (where
it was read, for error messages); the rest (text, tokens and tags, question and answers) is the task's own."""


class Task:
    """What the training loop, inference, the server and export need from a task. Every hook has a
    default; a new task subclasses this, overrides what differs and is added to `TASKS` (or passed
    to `register_task`), and runs through finetune, evaluate, predict, serve and export unchanged."""

    name: str = "task"
    main_metric: str = "accuracy"  # the dev metric that picks the best checkpoint (higher is better)
    metric_scale: float = 1.0  # the main metric's scale (QA's EM/F1 are 0-100): multi-task averages on 0-1
    labels: list[str] | None = None  # the label set, when the task has one (config.json's id2label)
    unused_parameters: bool = False  # some parameters get no gradient in some steps (DDP must be told)
    inputs: tuple[str, ...] = ("text",)  # what one input must hold (`bertkit predict`, the server)
    optional_inputs: tuple[str, ...] = ("text_b",)  # what it may hold besides
    windowed: int = 0  # examples split into windows by the last `featurize`
    default_max_length: int = 128  # tokens per input when the run does not say

    @property
    def label_set(self) -> list[str]:
        """The labels, once `fit` (or task.json) has set them."""
        if self.labels is None:
            raise BertkitError(f"task `{self.name}` has no labels yet: fit it on training data first")
        return self.labels

    # --- data -------------------------------------------------------------------------------------
    def read(self, path: str) -> list[Example]:
        """Labelled examples from a file; malformed records are a BertkitError naming file and line."""
        raise NotImplementedError

    def read_inputs(self, path: str) -> list[Example]:
        """Unlabelled examples for `bertkit predict` (labels, if present, are ignored)."""
        return self.read(path)

    def example(self, record: dict, number: int, source: str = "input") -> Example:
        """The example for one input given as fields (`inputs` + `optional_inputs`), e.g. from a request."""
        return {
            "text": record["text"],
            "text_b": record.get("text_b") or None,
            "label": None,
            "line": number,
            "source": source,
        }

    def fit(self, train: list[Example]) -> None:
        """Learn what the data defines (the label set) from the training examples."""

    def check(self, examples: list[Example], source: str) -> None:
        """Reject examples the fitted task cannot score (e.g. a dev label train never saw)."""

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[Feature]:
        """Model inputs and targets; an over-long example becomes several overlapping windows."""
        raise NotImplementedError

    # --- model and loss ---------------------------------------------------------------------------
    def build_model(self, config) -> nn.Module:
        """The head on a fresh encoder (weights are loaded by the caller)."""
        raise NotImplementedError

    def pretrained_target(self, model: nn.Module) -> nn.Module:
        """The module a pretrained checkpoint is loaded into (a model with `.bert`)."""
        return model

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's mean loss."""
        raise NotImplementedError

    def loss_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        """What the loss averages over; the loop sums these over a whole optimiser step."""
        return {"examples": len(batch["input_ids"])}

    def step_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], totals: dict[str, int]) -> torch.Tensor:
        """This micro-batch's share of the step's mean loss, given the step's summed `loss_counts`."""
        return self.loss(model, batch) * (len(batch["input_ids"]) / totals["examples"])

    def train_batches(
        self, features, batch_size: int, generator: torch.Generator, lengths: list[int]
    ) -> list[list[int]]:
        """One epoch's batches (indices into `features`): shuffled, grouped by length."""
        return length_grouped_batches(lengths, batch_size, generator)

    # --- predictions ------------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """Raw outputs for one batch, on the CPU, ready for `decode`."""
        raise NotImplementedError

    def decode(self, outputs: list, features: list[Feature], examples: list[Example]) -> list[dict]:
        """One prediction per example (windows merged), JSON-serialisable."""
        raise NotImplementedError

    def metrics(self, predictions: list[dict], examples: list[Example]) -> dict[str, float]:
        raise NotImplementedError

    # --- what a run writes ------------------------------------------------------------------------
    def state(self) -> dict:
        """What `task.json` stores so the task can be rebuilt for evaluate/predict/serve."""
        return {"task": self.name}

    def label_config(self) -> dict:
        """config.json's label maps (so transformers' pipelines name the labels)."""
        if not self.labels:
            return {}
        return {
            "id2label": {str(i): lab for i, lab in enumerate(self.labels)},
            "label2id": {lab: i for i, lab in enumerate(self.labels)},
        }

    def parts(self, model: nn.Module, metrics: dict) -> list[tuple[str, Task, nn.Module, dict]]:
        """(sub-directory, task, model, metrics) of each model directory a run saves: one, in the run's
        own directory, except for a multi-task run (one per task)."""
        return [("", self, model, metrics)]

    def tag(self, name: str, examples: list[Example]) -> list[Example]:
        """The examples of part `name` (see `parts`) as this task takes them: unchanged, except in a
        multi-task run, which marks each with its task."""
        return examples

    def report(self, out_dir: Path, predictions: Callable[[], list[dict]], examples: list[Example]) -> None:
        """Extra files about the best model on the dev examples (classification: confusion.png);
        `predictions()` computes its predictions, when a report needs them."""


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


# name -> (module, class), imported on use so `bertkit predict` for one task loads only it; or a class.
TASKS: dict[str, tuple[str, str] | type[Task]] = {
    "classify": ("bertkit.tasks.classify", "ClassifyTask"),
    "regression": ("bertkit.tasks.classify", "RegressionTask"),
    "ner": ("bertkit.tasks.ner", "NerTask"),
    "qa": ("bertkit.tasks.qa", "QATask"),
    "fill-mask": ("bertkit.tasks.fill_mask", "FillMaskTask"),
    "nsp": ("bertkit.tasks.nsp", "NspTask"),
    "seq2seq": ("bertkit.tasks.seq2seq", "Seq2SeqTask"),
    "embed": ("bertkit.tasks.embed", "EmbedTask"),
}


def register_task(name: str, cls: type[Task]) -> None:
    """Make `cls` available as task `name` (finetune --task NAME, and task.json's "task")."""
    TASKS[name] = cls


def get_task(name: str, **kwargs) -> Task:
    """A task by name (see TASKS); unknown names suggest the closest."""
    if name not in TASKS:
        raise BertkitError(f"unknown task `{name}`{suggest(name, TASKS)}; use one of: {', '.join(TASKS)}")
    entry = TASKS[name]
    cls = getattr(importlib.import_module(entry[0]), entry[1]) if isinstance(entry, tuple) else entry
    return cls(**kwargs)

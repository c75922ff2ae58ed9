"""Sentence and sentence-pair classification (`classify`) and regression (`regression`).

Data: TSV/CSV/JSONL records with `text`, optional `text_b`, and `label`, or any file a `Layout` reads
(`bertkit.data.benchmarks`: GLUE, CLUE, LCQMC and IMDB as downloaded, or a field mapping). The head is a linear layer
on the pooled [CLS] vector. A text longer than `max_length` is split into overlapping windows; each
window is trained with the example's label and at prediction time the windows' logits are averaged.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from bertkit.data.benchmarks import Layout, read_layout
from bertkit.data.readers import read_lines, read_records
from bertkit.errors import BertkitError
from bertkit.metrics import classification_report, confusion_matrix, plot_confusion_matrix, regression_report
from bertkit.model import BertForSequenceClassification
from bertkit.tasks import Task, build_input, windows

log = logging.getLogger("bertkit")


def _records(path: str, layout: Layout | None, labelled: bool) -> list[tuple[int, dict]]:
    """(line number, record): the file as it is, or through `layout` (which renames its columns)."""
    return list(read_records(path)) if layout is None else read_layout(path, layout, labelled)[0]


def read_examples(path: str, numeric: bool, layout: Layout | None = None) -> list[dict]:
    """Records with `text`, optional `text_b`, `label`; every problem names the file and line."""
    examples = []
    for number, record in _records(path, layout, labelled=True):
        for key in ("text", "label"):
            if key not in record or record[key] is None or str(record[key]).strip() == "":
                raise BertkitError(
                    f"{path}, line {number}: missing `{key}` (fields found: "
                    f"{', '.join(record)}); every record needs `text` and `label`, "
                    "and `text_b` for sentence pairs"
                )
        label = record["label"]
        if numeric:
            try:
                label = float(label)
            except (TypeError, ValueError):
                raise BertkitError(
                    f"{path}, line {number}: label {label!r} is not a number; regression needs real-valued labels"
                ) from None
            if not math.isfinite(label):
                raise BertkitError(
                    f"{path}, line {number}: label {record['label']!r} is not a finite number; "
                    "regression needs real-valued labels"
                )
        else:
            label = str(label)
        text_b = record.get("text_b")
        examples.append(
            {
                "text": str(record["text"]),
                "text_b": None if text_b in (None, "") else str(text_b),
                "label": label,
                "line": number,
                "source": str(path),
            }
        )
    if not examples:
        raise BertkitError(f"{path} holds no examples: expected a header row and one example a line")
    return examples


def read_unlabelled(path: str, layout: Layout | None = None) -> list[dict]:
    """Records with `text` (and optional `text_b`) from TSV/CSV/JSONL; a .txt file is one text a line.
    An `id` (a benchmark's test files) is kept, and written with the prediction."""
    if Path(path).suffix == ".txt" and layout is None:
        rows = [(n, {"text": line}) for n, line in read_lines(path) if line.strip()]
    else:
        rows = _records(path, layout, labelled=False)
    examples = []
    for number, record in rows:
        if not str(record.get("text") or "").strip():
            raise BertkitError(
                f"{path}, line {number}: no `text` (fields found: {', '.join(record)}); "
                "give every record a non-empty `text`, or use a .txt file with one text a line"
            )
        text_b = record.get("text_b")
        examples.append(
            {
                **({"id": record["id"]} if record.get("id") is not None and layout is not None else {}),
                "text": str(record["text"]),
                "text_b": None if text_b in (None, "") else str(text_b),
                "label": None,
                "line": number,
                "source": str(path),
            }
        )
    if not examples:
        raise BertkitError(f"{path} holds no texts to predict")
    return examples


class ClassifyTask(Task):
    name = "classify"
    main_metric = "accuracy"
    numeric = False

    def __init__(self, labels: list[str] | None = None, layout: Layout | None = None):
        self.labels = labels
        self.windowed = 0
        # How data files are read (not saved in task.json: the model does not depend on it).
        self.layout = layout

    @property
    def num_outputs(self) -> int:
        return len(self.label_set)

    def read(self, path: str) -> list[dict]:
        return read_examples(path, self.numeric, self.layout)

    def read_inputs(self, path: str) -> list[dict]:
        """Texts to label: TSV/CSV/JSONL with `text` (and `text_b` for pairs), or one text a line."""
        return read_unlabelled(path, self.layout)

    def fit(self, train: list[dict]) -> None:
        if self.labels is None:
            self.labels = sorted({e["label"] for e in train})
        if len(self.label_set) < 2:
            raise BertkitError(
                f"{train[0]['source']}: only one label ({self.label_set[0]!r}) in the "
                "training data; classification needs at least two"
            )

    def check(self, examples: list[dict], source: str) -> None:
        known = set(self.label_set)
        for e in examples:
            if e["label"] not in known:
                raise BertkitError(
                    f"{source}, line {e['line']}: label {e['label']!r} never occurs in the training "
                    f"data (labels: {', '.join(self.label_set)}); fix the label or add training examples"
                )

    def target(self, example: dict):
        return self.label_set.index(example["label"]) if example["label"] in self.label_set else -100

    def featurize(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        features, self.windowed = [], 0
        for index, e in enumerate(examples):
            # Whole texts (max_length=None): the windows below must see every token, not the first 512.
            a = tokenizer.encode(e["text"], max_length=None, add_special_tokens=False).ids
            b = tokenizer.encode(e["text_b"], max_length=None, add_special_tokens=False).ids if e["text_b"] else None
            budget = max_length - (3 if b is not None else 2)
            spans = self._spans(a, b, budget)
            self.windowed += len(spans) > 1
            for part_a, part_b in spans:
                ids, types = build_input(tokenizer, part_a, part_b)
                features.append({"input_ids": ids, "token_type_ids": types, "example": index, "label": self.target(e)})
        if self.windowed:
            log.info(
                "%d of %d examples are longer than max_length=%d and were split into overlapping "
                "windows (their logits are averaged)",
                self.windowed,
                len(examples),
                max_length,
            )
        return features

    @staticmethod
    def _spans(a: list[int], b: list[int] | None, budget: int):
        if b is None:
            return [(a[s:t], None) for s, t in windows(len(a), budget, budget // 2)]
        if len(a) + len(b) <= budget:
            return [(a, b)]
        # Keep the first text whole when it fits in half the budget and slide over the second.
        if len(a) <= budget // 2:
            size = budget - len(a)
            return [(a, b[s:t]) for s, t in windows(len(b), size, size // 2)]
        size = budget // 2
        return [
            (a[s1:t1], b[s2:t2])
            for s1, t1 in windows(len(a), size, size // 2)
            for s2, t2 in windows(len(b), budget - size, (budget - size) // 2)
        ]

    def build_model(self, config):
        return BertForSequenceClassification(config, self.num_outputs)

    def logits(self, model, batch) -> torch.Tensor:
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    def loss(self, model, batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch), batch["label"])

    def forward(self, model, batch) -> torch.Tensor:
        return self.logits(model, batch).float().cpu()

    def _merged(self, outputs: list[torch.Tensor], features: list[dict], n: int) -> torch.Tensor:
        logits = torch.cat(outputs)
        index = torch.tensor([f["example"] for f in features])
        total = torch.zeros(n, logits.shape[1]).index_add_(0, index, logits)
        counts = torch.zeros(n).index_add_(0, index, torch.ones(len(features)))
        return total / counts.clamp(min=1).unsqueeze(1)

    def decode(self, outputs, features, examples) -> list[dict]:
        probs = self._merged(outputs, features, len(examples)).softmax(-1)
        return [
            {
                "label": self.label_set[int(p.argmax())],
                "probabilities": {lab: round(float(x), 6) for lab, x in zip(self.label_set, p)},
            }
            for p in probs
        ]

    def metrics(self, predictions, examples) -> dict[str, float]:
        return classification_report([p["label"] for p in predictions], [e["label"] for e in examples], self.label_set)

    def state(self) -> dict:
        return {"task": self.name, "labels": self.labels}

    def report(self, out_dir, predictions, examples) -> None:
        """confusion.png: gold labels down, predicted across."""
        matrix = confusion_matrix([p["label"] for p in predictions()], [e["label"] for e in examples], self.label_set)
        plot_confusion_matrix(matrix, self.label_set, out_dir / "confusion.png")


class RegressionTask(ClassifyTask):
    """Real-valued labels (STS-B style): one output, mean squared error, Pearson/Spearman."""

    name = "regression"
    main_metric = "pearson"
    numeric = True

    def __init__(self, labels=None, layout: Layout | None = None):
        super().__init__(labels=["score"], layout=layout)

    @property
    def num_outputs(self) -> int:
        return 1

    def fit(self, train):
        pass

    def check(self, examples, source):
        pass

    def label_config(self) -> dict:
        return {"id2label": {"0": "score"}, "label2id": {"score": 0}, "problem_type": "regression"}

    def report(self, out_dir, predictions, examples) -> None:
        pass

    def target(self, example):
        return 0.0 if example["label"] is None else float(example["label"])

    def loss(self, model, batch):
        return F.mse_loss(self.logits(model, batch).squeeze(-1), batch["label"].float())

    def decode(self, outputs, features, examples):
        scores = self._merged(outputs, features, len(examples)).squeeze(-1)
        return [{"score": round(float(s), 6)} for s in scores]

    def metrics(self, predictions, examples):
        return regression_report([p["score"] for p in predictions], [e["label"] for e in examples])

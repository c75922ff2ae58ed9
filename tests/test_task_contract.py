"""The task contract: a task defined here, in the test, runs through finetune, evaluate, predict, serve
and export without any of those modules knowing it (it only subclasses `Task` and is registered)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from bertkit.cli.main import main as cli
from bertkit.data.readers import read_lines
from bertkit.model import BertForSequenceClassification
from bertkit.tasks import TASKS, Task, build_input, register_task


class WordParity(Task):
    """A toy task: is the number of words in a line even or odd? One text a line, no labels in the file."""

    name = "word-parity"
    main_metric = "accuracy"
    optional_inputs = ()

    def __init__(self, labels=None):
        self.labels = labels or ["even", "odd"]

    def read(self, path):
        return [self.example({"text": line}, n, path, labelled=True) for n, line in read_lines(path) if line.strip()]

    def read_inputs(self, path):
        return [self.example({"text": line}, n, path) for n, line in read_lines(path) if line.strip()]

    def example(self, record, number, source="input", labelled=False):
        label = self.labels[len(record["text"].split()) % 2] if labelled else None
        return {"text": record["text"], "label": label, "line": number, "source": source}

    def featurize(self, examples, tokenizer, max_length):
        features = []
        for i, e in enumerate(examples):
            ids, types = build_input(
                tokenizer, tokenizer.encode(e["text"], add_special_tokens=False).ids[: max_length - 2]
            )
            label = self.labels.index(e["label"]) if e["label"] is not None else -100
            features.append({"input_ids": ids, "token_type_ids": types, "example": i, "label": label})
        return features

    def build_model(self, config):
        return BertForSequenceClassification(config, 2)

    def loss(self, model, batch):
        return F.cross_entropy(self.forward(model, batch), batch["label"])

    def forward(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float().cpu()

    def decode(self, outputs, features, examples):
        logits = torch.cat(outputs)
        order = [f["example"] for f in features]
        best = {i: self.labels[int(row.argmax())] for i, row in zip(order, logits)}
        return [{"label": best[i], "words": len(e["text"].split())} for i, e in enumerate(examples)]

    def metrics(self, predictions, examples):
        return {"accuracy": sum(p["label"] == e["label"] for p, e in zip(predictions, examples)) / len(examples)}

    def state(self):
        return {"task": self.name, "labels": self.labels}


@pytest.fixture()
def toy_task():
    register_task("word-parity", WordParity)
    yield
    TASKS.pop("word-parity")


def test_a_task_defined_outside_bertkit_runs_through_every_verb(toy_task, tiny_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from bertkit.cli.serve import ServeConfig, build_app

    words = "the a film is good bad long short very quite".split()
    lines = [" ".join(words[: 1 + (i * 7) % 9]) for i in range(40)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(lines[:12]) + "\n")
    out = tmp_path / "run"
    assert (
        cli(
            [
                "finetune",
                "--task",
                "word-parity",
                "--model",
                str(tiny_dir),
                "--train",
                str(tmp_path / "train.txt"),
                "--dev",
                str(tmp_path / "dev.txt"),
                "--output",
                str(out),
                "--train.epochs",
                "1",
                "--train.batch-size",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((out / "task.json").read_text())["task"] == "word-parity"
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "even", "1": "odd"}

    assert cli(["evaluate", "--model", str(out), "--data", str(tmp_path / "dev.txt")]) == 0
    assert set(json.loads((out / "eval-dev.json").read_text())) == {"accuracy"}

    assert (
        cli(
            [
                "predict",
                "--model",
                str(out),
                "--input",
                str(tmp_path / "dev.txt"),
                "--output",
                str(tmp_path / "p.jsonl"),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["words"] for r in rows] == [len(line.split()) for line in lines[:12]]

    client = TestClient(build_app(ServeConfig(task=[f"parity={out}"], device="cpu")))
    with client:
        served = client.post("/predict/parity", json={"texts": lines[:12]}).json()["predictions"]
        assert [p["label"] for p in served] == [r["label"] for r in rows]
        assert client.post("/predict/parity", json={"inputs": [{"text": "a b", "text_b": "c"}]}).status_code == 422

    onnx_dir = tmp_path / "onnx"
    assert cli(["export", "--model", str(out), "--output", str(onnx_dir)]) == 0
    assert (
        cli(
            [
                "predict",
                "--model",
                str(onnx_dir),
                "--backend",
                "onnx",
                "--input",
                str(tmp_path / "dev.txt"),
                "--output",
                str(tmp_path / "onnx.jsonl"),
            ]
        )
        == 0
    )
    onnx_rows = [json.loads(line) for line in (tmp_path / "onnx.jsonl").read_text().splitlines()]
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in rows]
    capsys.readouterr()

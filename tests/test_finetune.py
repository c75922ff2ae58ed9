"""Fine-tuning end to end on tiny random models and slices of the real data: the CLI verbs, the files a
run writes, exact resume after a kill, seeds, the learning itself, and errors raised before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import head_conll, run_finetune, slice_tsv

from bertkit.cli.main import main as cli


def test_finetune_evaluate_predict_cli(tiny_dir, mr_small, tmp_path, capsys):
    train, dev = mr_small
    out = tmp_path / "run"
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=2", "--max-length=128") == 0
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "task.json",
        "metrics.json",
        "metrics.jsonl",
        "training.png",
        "confusion.png",
        "finetune.yaml",
        "checkpoint/state.pt",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "f1_macro", "mcc", "f1"}
    assert json.loads((out / "task.json").read_text())["labels"] == ["negative", "positive"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "dev" in r] == [1, 2]  # one evaluation per epoch, then stop
    assert max(r["step"] for r in records) == 2 * 6  # 96 examples (none windowed) / 16 per step, 2 epochs
    # The Hugging Face directory loads in transformers with the label names.
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForSequenceClassification.from_pretrained(out)
    assert hf.config.id2label == {0: "negative", 1: "positive"}

    capsys.readouterr()
    assert cli(["evaluate", "--model", str(out), "--data", str(dev), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx(metrics)  # the best checkpoint scores what training reported
    assert json.loads((out / "eval-dev.json").read_text()) == printed

    inputs = tmp_path / "new.txt"
    inputs.write_text("a wonderful, moving film\n\nthe worst movie of the year\n", encoding="utf-8")
    assert cli(["predict", "--model", str(out), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a wonderful, moving film", "the worst movie of the year"]
    for r in rows:
        assert r["label"] in ("negative", "positive")
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def _weights(state_path: Path) -> dict:
    return torch.load(state_path, map_location="cpu", weights_only=True)["model"]


def test_resume_after_kill_matches_uninterrupted_run(tiny_dir, mr_small, tmp_path):
    """SIGKILL a run mid-training, resume it: the final weights equal those of a run never stopped."""
    train, dev = mr_small
    args = ["--train.epochs=3", "--train.checkpoint-every=1", "--train.batch-size=8"]
    assert run_finetune(tiny_dir, train, dev, tmp_path / "whole", *args) == 0

    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "bertkit.cli.main",
        "finetune",
        "--task",
        "classify",
        "--model",
        str(tiny_dir),
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--output",
        str(killed),
        "--max-length",
        "48",
        "--train.lr=1e-3",
        "--train.log-every=1",
        "--device",
        "cpu",
        *args,
    ]
    env = dict(os.environ)  # same thread count as this process: float sums must add up in the same order
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = killed / "checkpoint" / "state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill once it is well into epoch 2
        if state.is_file():
            try:
                if torch.load(state, weights_only=True)["position"]["step"] >= 16:
                    break
            except (RuntimeError, EOFError):  # not possible with atomic writes, but do not hide it
                raise
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(state, weights_only=True)["position"]["step"]
    assert step >= 16
    assert run_finetune(tiny_dir, train, dev, killed, *args, "--resume") == 0

    whole, resumed = _weights(tmp_path / "whole/checkpoint/state.pt"), _weights(state)
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0, msg=name)

    # The metrics log holds each step once, with the losses of the run that never stopped.
    def log(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert log(killed) == log(tmp_path / "whole")


def test_learns_on_real_sentiment(tiny_dir, mr_dir, tmp_path):
    """Not just running: a tiny model fits 96 real MR sentences (training accuracy near 1)."""
    from bertkit.inference import evaluate_file, load_task

    train = slice_tsv(mr_dir / "train.tsv", tmp_path / "train.tsv", 48)
    assert run_finetune(tiny_dir, train, train, tmp_path / "fit", "--train.epochs=15", "--train.warmup=0") == 0
    assert evaluate_file(load_task(tmp_path / "fit", device="cpu"), str(train))["accuracy"] >= 0.95


def test_seeds_report_mean_and_std(tiny_dir, mr_small, tmp_path):
    train, dev = mr_small
    assert run_finetune(tiny_dir, train, dev, tmp_path / "s", "--train.epochs=1", "--seeds", "1,2") == 0
    summary = json.loads((tmp_path / "s/metrics.json").read_text())
    runs = [json.loads((tmp_path / f"s/seed-{s}/metrics.json").read_text()) for s in (1, 2)]
    assert summary["seeds"] == 2
    assert summary["accuracy"] == pytest.approx((runs[0]["accuracy"] + runs[1]["accuracy"]) / 2)
    assert summary["accuracy_std"] == pytest.approx(abs(runs[0]["accuracy"] - runs[1]["accuracy"]) / 2**0.5)


def test_dropout_override_trains_and_is_saved(tiny_dir, mr_small, tmp_path, capsys):
    """--dropout replaces config.json's dropout for fine-tuning (a model pretrained without dropout gets
    0.1 back): the saved config records it, training differs from the default's, a bad value fails early."""
    train, dev = mr_small
    assert json.loads((tiny_dir / "config.json").read_text())["hidden_dropout_prob"] == 0.1
    for name, extra in (("default", ()), ("none", ("--dropout", "0.0"))):
        assert run_finetune(tiny_dir, train, dev, tmp_path / name, "--train.epochs=1", *extra) == 0
    saved = json.loads((tmp_path / "none/config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.0
    losses = [
        [
            json.loads(line)["loss"]
            for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)
        ]
        for name in ("default", "none")
    ]
    assert losses[0][0] != losses[1][0]  # same seed, same batch: only dropout differs
    assert run_finetune(tiny_dir, train, dev, tmp_path / "bad", "--dropout", "1.5") == 2
    assert "`--dropout` is 1.5; it must be >= 0 and < 1" in capsys.readouterr().err


def test_unknown_dev_label_fails_before_training(tiny_dir, mr_small, tmp_path, capsys):
    train, _ = mr_small
    dev = tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\ngood\tpositive\nmeh\tneutral\n", encoding="utf-8")
    assert run_finetune(tiny_dir, train, dev, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{dev}, line 3" in err and "'neutral' never occurs in the training data" in err
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_bad_config_key_suggests(tiny_dir, mr_small, tmp_path, capsys):
    train, dev = mr_small
    assert run_finetune(tiny_dir, train, dev, tmp_path / "out", "--train.lrr=1e-4") == 2
    err = capsys.readouterr().err
    assert err.startswith("bertkit finetune: error: unknown key `train.lrr` (did you mean `lr`?)")


def test_multitask_config_lists_tasks(tiny_dir, mr_small, tmp_path, capsys):
    """Two classification tasks on one encoder: per-task model directories and metric keys."""
    train, dev = mr_small
    cfg = tmp_path / "mt.yaml"
    cfg.write_text(
        f"""task: multitask
model: {tiny_dir}
output: {tmp_path / "mt"}
max_length: 48
device: cpu
train: {{epochs: 1, batch_size: 16}}
tasks:
  - {{name: a, task: classify, train: {train}, dev: {dev}}}
  - {{name: b, task: classify, train: {train}, dev: {dev}}}
""",
        encoding="utf-8",
    )
    assert cli(["finetune", "--config", str(cfg)]) == 0
    metrics = json.loads((tmp_path / "mt/metrics.json").read_text())
    assert {"a.accuracy", "b.accuracy", "score"} <= set(metrics)
    assert metrics["score"] == pytest.approx((metrics["a.accuracy"] + metrics["b.accuracy"]) / 2)
    for name in ("a", "b"):  # each head is a standalone fine-tuned model
        capsys.readouterr()
        assert cli(["evaluate", "--model", str(tmp_path / "mt" / name), "--data", str(dev)]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics[f"{name}.accuracy"])


def test_multitask_sampling():
    """Proportional: every batch once per epoch; temperature: small tasks drawn more than their share."""
    from bertkit.tasks.multitask import MultiTask

    task = MultiTask({"big": None, "small": None}, "proportional")
    features = [{"input_ids": [1] * 5, "task": 0}] * 900 + [{"input_ids": [1] * 5, "task": 1}] * 100
    batches = task.train_batches(features, 10, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    task = MultiTask({"big": None, "small": None}, "temperature", temperature=1e9)  # ~uniform
    batches = task.train_batches(features, 10, torch.Generator().manual_seed(0))
    small = sum(features[b[0]]["task"] == 1 for b in batches)
    assert len(batches) == 100 and 35 <= small <= 65  # ~50 of 100 draws, though it has 10% of the data
    assert all(len({features[i]["task"] for i in b}) == 1 for b in batches)


def test_bf16_autocast_trains_close_to_fp32_and_fp16_needs_cuda(tiny_dir, mr_small, tmp_path, capsys):
    """bf16 autocast (CPU here; the same code path on CUDA) runs the forward pass in bf16: the losses
    differ from fp32 in the third digit, not more, and the weights stay fp32. fp16 on a CPU is refused."""
    train, dev = mr_small
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1", f"--train.precision={precision}") == 0
        runs[precision] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        weights = _weights(out / "checkpoint" / "state.pt")
        assert {w.dtype for w in weights.values()} == {torch.float32}
    losses = {k: [r["loss"] for r in v if "loss" in r] for k, v in runs.items()}
    assert len(losses["bf16"]) == len(losses["fp32"]) >= 5
    assert losses["bf16"] != losses["fp32"]  # autocast did run in bf16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    capsys.readouterr()
    assert run_finetune(tiny_dir, train, dev, tmp_path / "fp16", "--train.precision=fp16") == 2
    assert "fp16 needs a CUDA device; on a CPU use bf16 or fp32" in capsys.readouterr().err


def test_multitask_score_puts_squad_percentages_on_the_0_1_scale():
    """The score that picks the best checkpoint averages accuracy (0-1) with SQuAD F1 (0-100) /100:
    otherwise a QA task would outweigh every other task a hundredfold."""
    from bertkit.tasks import get_task
    from bertkit.tasks.multitask import MultiTask

    task = MultiTask({"mr": get_task("classify"), "squad": get_task("qa")})
    task.tasks["mr"].labels = ["neg", "pos"]
    examples = [
        {"task": 0, "label": "pos"},
        {"task": 0, "label": "neg"},
        {"task": 1, "id": "q", "answers": [{"text": "Paris", "start": 0}], "impossible": False},
    ]
    predictions = [{"label": "pos"}, {"label": "pos"}, {"id": "q", "answer": "Paris"}]
    metrics = task.metrics(predictions, examples)
    assert metrics["mr.accuracy"] == 0.5 and metrics["squad.f1"] == 100.0
    assert metrics["score"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_ner_finetune_evaluate_predict_cli(tiny_dir, wnut16_dir, tmp_path, capsys, head):
    train = head_conll(wnut16_dir / "train.conll", tmp_path / "train.conll", 40)
    out = tmp_path / "ner"
    assert (
        cli(
            [
                "finetune",
                "--task",
                "ner",
                "--head",
                head,
                "--model",
                str(tiny_dir),
                "--train",
                str(train),
                "--dev",
                str(train),
                "--output",
                str(out),
                "--train.epochs=1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"f1", "precision", "recall"} <= set(metrics)
    assert json.loads((out / "task.json").read_text())["head"] == head
    capsys.readouterr()
    assert cli(["evaluate", "--model", str(out), "--data", str(train)]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics)
    text = tmp_path / "in.txt"
    text.write_text("Barack Obama visited Paris on Monday\n", encoding="utf-8")
    assert cli(["predict", "--model", str(out), "--input", str(text), "--output", str(tmp_path / "p.jsonl")]) == 0
    row = json.loads((tmp_path / "p.jsonl").read_text())
    assert row["text"] == "Barack Obama visited Paris on Monday" and len(row["tags"]) == 6
    for entity in row["entities"]:
        assert row["text"][entity["start"] : entity["end"]] == entity["text"]


def test_qa_finetune_evaluate_predict_cli(tiny_dir, squad11_dir, tmp_path, capsys):
    data = json.loads((squad11_dir / "dev.json").read_text(encoding="utf-8"))
    small = {"version": "1.1", "data": [{"title": "t", "paragraphs": data["data"][0]["paragraphs"][:3]}]}
    path = tmp_path / "small.json"
    path.write_text(json.dumps(small), encoding="utf-8")
    out = tmp_path / "qa"
    assert (
        cli(
            [
                "finetune",
                "--task",
                "qa",
                "--model",
                str(tiny_dir),
                "--train",
                str(path),
                "--dev",
                str(path),
                "--output",
                str(out),
                "--train.epochs=1",
                "--max-length=128",
                "--qa.doc-stride=64",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert set(json.loads((out / "metrics.json").read_text())) == {"exact_match", "f1"}
    capsys.readouterr()
    assert cli(["evaluate", "--model", str(out), "--data", str(path)]) == 0
    questions = tmp_path / "q.jsonl"
    context = small["data"][0]["paragraphs"][0]["context"]
    questions.write_text(json.dumps({"id": "q1", "question": "Who won Super Bowl 50?", "context": context}) + "\n")
    assert cli(["predict", "--model", str(out), "--input", str(questions), "--output", str(tmp_path / "p.jsonl")]) == 0
    row = json.loads((tmp_path / "p.jsonl").read_text())
    assert row["id"] == "q1" and context[row["start"] : row["end"]] == row["answer"]

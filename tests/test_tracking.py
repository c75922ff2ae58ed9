"""Progress and tracking: bars on a terminal only, TensorBoard scalars, a training curve that shows a
single point and names its run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import run_finetune, tiny_config

from bertkit import fetch as fetch_module
from bertkit.errors import BertkitError
from bertkit.inference import predict
from bertkit.tasks.classify import ClassifyTask
from bertkit.train.board import Board
from bertkit.train.plot import training_figure


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_single_logged_point_is_visible_and_the_figure_names_its_run():
    records = [{"step": 1, "epoch": 1.0, "loss": 0.69, "lr": 1e-4}, {"step": 1, "epoch": 1, "dev": {"accuracy": 0.7}}]
    fig = training_figure(records, "accuracy", "mr: classify")
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert [line.get_label() for line in lines] == ["training loss", "dev accuracy"]
    assert all(line.get_marker() not in (None, "", "None") for line in lines)  # one point draws no line
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["training loss", "dev accuracy"]
    assert fig.axes[0].get_title() == "mr: classify"


def test_tensorboard_gets_the_logged_records(tiny_dir, mr_small, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, dev = mr_small
    out = tmp_path / "mr-run"
    board = tmp_path / "tb"
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1", "--train.tensorboard", str(board)) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(board / "mr-run"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"])) for r in records if "loss" in r]
    dev_acc = [(e.step, e.value) for e in events.Scalars("dev/accuracy")]
    assert dev_acc == [(r["step"], pytest.approx(r["dev"]["accuracy"])) for r in records if "dev" in r]
    assert (out / "training.png").stat().st_size > 0


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(BertkitError, match="pip install tensorboard"):
        Board(tmp_path, "run")


def test_progress_bars_appear_on_a_terminal_only(monkeypatch, en):
    torch.manual_seed(0)
    config = tiny_config(en.vocab_size, num_hidden_layers=1)
    task = ClassifyTask(labels=["neg", "pos"])
    examples = [{"text": f"text {i}", "text_b": None, "label": None, "line": i, "source": "t"} for i in range(20)]
    features = task.featurize(examples, en, 32)
    model = task.build_model(config)
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        predict(model, task, features, examples, batch_size=4, progress=True)
        assert ("predict" in stream.getvalue()) is shown


def test_fetch_shows_pips_progress_on_a_terminal_and_keeps_it_quiet_elsewhere(monkeypatch, tmp_path):
    calls = []

    def run(command, **kwargs):
        calls.append((command, kwargs))
        dest = command[command.index("--dest") + 1]
        open(f"{dest}/toy-1.0-py3-none-any.whl", "wb").close()
        return subprocess.CompletedProcess(command, 0, stdout=None if kwargs["stdout"] is not subprocess.PIPE else "")

    monkeypatch.setenv("BERTKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(
        fetch_module, "subprocess", SimpleNamespace(run=run, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT)
    )
    package = SimpleNamespace(spec="toy==1.0", sdist=False)
    for stream, bar in ((io.StringIO(), "off"), (Terminal(), "on")):
        monkeypatch.setattr(sys, "stderr", stream)
        fetch_module.download(package)
        command, kwargs = calls[-1]
        assert command[command.index("--progress-bar") + 1] == bar
        assert (kwargs["stdout"] is stream) is (bar == "on")  # pip's bar goes to stderr; stdout stays for paths

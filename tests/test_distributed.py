"""Data-parallel pretraining with torchrun on CPU (gloo): 2 processes with 8 examples each take the same
steps as 1 process with 16, and a 2-process checkpoint resumes in 1 process. Dropout is off, so the
only difference between the runs is the order of float additions."""

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

from bertkit.cli.main import main as cli

TORCHRUN = Path(sys.executable).with_name("torchrun")
STEPS = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory, corpus_en_dir, minilm_dir) -> Path:
    """NSP pairs from the first 30 SQuAD paragraphs of corpus-en, MiniLM's vocab."""
    d = tmp_path_factory.mktemp("dist")
    text = d / "en.txt"
    text.write_text(
        "\n".join((corpus_en_dir / "corpus.txt").read_text(encoding="utf-8").splitlines()[:30]) + "\n", encoding="utf-8"
    )
    assert (
        cli(
            [
                "pretrain-data",
                "--input",
                str(text),
                "--vocab",
                "minilm",
                "--output",
                str(d / "data"),
                "--max-seq-length",
                "32",
                "--max-predictions",
                "5",
                "--dupe-factor",
                "1",
            ]
        )
        == 0
    )
    return d / "data"


def _args(data: Path, out: Path) -> list[str]:
    return [
        "pretrain",
        "--model-size",
        "tiny",
        "--vocab",
        "minilm",
        "--config-overrides.hidden-size=32",
        "--config-overrides.num-attention-heads=2",
        "--config-overrides.hidden-dropout-prob=0",
        "--config-overrides.attention-probs-dropout-prob=0",
        "--data",
        str(data),
        "--output",
        str(out),
        "--train.batch-size=16",
        "--train.lr=1e-3",
        "--train.log-every=1",
        f"--train.max-steps={STEPS}",
        "--train.checkpoint-every=1",
        "--train.eval-every=20",
        "--eval-instances=8",
        "--device",
        "cpu",
    ]


def _start(data: Path, out: Path, processes: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "bertkit.cli.main"]
    else:
        cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}", "-m", "bertkit.cli.main"]
    return subprocess.Popen(
        cmd + _args(data, out) + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its children: torchrun starts each worker in a session of its own."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            children.append(int(stat.parent.name))
    for child in children:
        os.kill(child, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint" / "state.pt", map_location="cpu", weights_only=True)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed beside this python")
def test_two_processes_match_one_and_resume_in_one(data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    runs = [_start(data, one, 1), _start(data, two, 2)]
    printed = [_finish(p) for p in runs]
    assert json.loads(printed[1]) == pytest.approx(json.loads(printed[0]), rel=1e-5, abs=1e-4)  # printed by rank 0
    reference = _state(one)
    assert reference["position"]["step"] == _state(two)["position"]["step"] == STEPS
    assert "rank_rng" in _state(two) and len(_state(two)["rank_rng"]) == 2
    _assert_same_weights(_state(two)["model"], reference["model"])
    # Only rank 0 wrote the log: every step once, with the loss of the whole global batch.
    log_one, log_two = _log(one), _log(two)
    expected_steps = sorted(list(range(1, STEPS + 1)) + [20, 40])  # a loss every step, an evaluation at 20 and 40
    assert [r["step"] for r in log_two] == [r["step"] for r in log_one] == expected_steps
    for a, b in zip(log_one, log_two):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    for name in ("config.json", "model.safetensors", "vocab.txt", "training.png", "metrics.json"):
        assert (two / name).is_file(), name

    # A 2-process run killed after step 3 resumes in one process and ends where the 1-process run did.
    killed = tmp_path / "killed"
    proc = _start(data, killed, 2)
    deadline = time.time() + 120
    state = killed / "checkpoint" / "state.pt"
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["position"]["step"] >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    _kill_tree(proc.pid)  # both workers and torchrun, as when the machine dies
    proc.communicate()
    assert 3 <= _state(killed)["position"]["step"] < STEPS
    _finish(_start(data, killed, 1, "--resume"))
    where = ("epoch", "batch", "step")
    assert [_state(killed)["position"][k] for k in where] == [reference["position"][k] for k in where]
    _assert_same_weights(_state(killed)["model"], reference["model"])
    assert [r["step"] for r in _log(killed)] == [r["step"] for r in log_one]


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed beside this python")
def test_multitask_with_crf_two_processes_match_one(tmp_path, minilm_dir, mr_small, wnut16_dir):
    """Fine-tuning under torchrun with heads whose loss lives outside `forward` (the CRF) and with heads
    that a step does not use (multi-task): 2 processes end with the weights of 1 process."""
    from helpers import head_conll

    from bertkit.checkpoint import save_model
    from bertkit.model import BertConfig, BertModel
    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_dir(minilm_dir)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = save_model(BertModel(config), tmp_path / "tiny", tokenizer)
    ner = head_conll(wnut16_dir / "train.conll", tmp_path / "ner.conll", 48)
    train, dev = mr_small
    cfg = tmp_path / "mt.yaml"
    cfg.write_text(
        f"""task: multitask
model: {model}
max_length: 48
device: cpu
sampling: temperature
train: {{epochs: 2, batch_size: 16, lr: 1.0e-3, eval_every: 0, log_every: 1}}
tasks:
  - {{name: sentiment, task: classify, train: {train}, dev: {dev}}}
  - {{name: entities, task: ner, head: crf, train: {ner}, dev: {ner}}}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        cmd = (
            [sys.executable, "-m", "bertkit.cli.main"]
            if processes == 1
            else [str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}", "-m", "bertkit.cli.main"]
        )
        runs[processes] = subprocess.Popen(
            cmd + ["finetune", "--config", str(cfg), "--output", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
    for processes, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert ("distributed: 2 processes (gloo)" in err) == (processes == 2)
        assert (json.loads(out) or {}).get("score") is not None  # printed once, by rank 0
    one, two = _state(tmp_path / "p1"), _state(tmp_path / "p2")
    assert one["position"]["step"] == two["position"]["step"] > 4
    assert any(k.endswith("crf.transitions") for k in one["model"]), list(one["model"])[:5]
    _assert_same_weights(two["model"], one["model"])

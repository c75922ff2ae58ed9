"""bertkit distill: a student learns the teacher's predictions; the teacher's outputs are computed once
and cached exactly; a killed run resumes to the same weights; every task family runs end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import head_conll, run_finetune

from bertkit.cli.main import main as cli
from bertkit.distill import TeacherCache, teacher_outputs
from bertkit.inference import load_task, predict_file


@pytest.fixture(scope="module")
def teacher(tiny_dir, mr_small, tmp_path_factory):
    train, dev = mr_small
    out = tmp_path_factory.mktemp("teacher") / "mr"
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=3") == 0
    return out


def _distill(teacher, train, dev, out, *extra) -> int:
    return cli(
        [
            "distill",
            "--teacher",
            str(teacher),
            "--student",
            "tiny",
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--output",
            str(out),
            "--train.batch-size=16",
            "--train.lr=1e-3",
            "--train.log-every=1",
            "--device",
            "cpu",
            *extra,
        ]
    )


def test_the_student_converges_to_the_teachers_predictions(teacher, mr_small, tmp_path):
    """Soft targets only, on a small set: the student ends up labelling it as the teacher does."""
    train, dev = mr_small
    out = tmp_path / "student"
    assert (
        _distill(
            teacher,
            train,
            train,
            out,
            "--soft-weight",
            "1",
            "--train.epochs=30",
            "--train.warmup=0",
            "--temperature",
            "1",
        )
        == 0
    )
    want = [r["label"] for r in predict_file(load_task(teacher, device="cpu"), str(train))]
    got = [r["label"] for r in predict_file(load_task(out, device="cpu"), str(train))]
    agreement = sum(a == b for a, b in zip(want, got)) / len(want)
    assert agreement > 0.95, agreement
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 128  # tiny: L2/H128


def test_cached_teacher_outputs_equal_a_fresh_forward(teacher, mr_small, tmp_path):
    train, dev = mr_small
    out = tmp_path / "s"
    assert _distill(teacher, train, dev, out, "--train.max-steps=1") == 0
    cache = TeacherCache(out / "teacher")
    run = load_task(teacher, device="cpu")
    examples = run.fine_tuned.read(str(train))
    features = run.fine_tuned.featurize(examples, run.tokenizer, run.max_length)
    fresh, per_token = teacher_outputs(run.model, features, run.tokenizer.pad_id, run.device)
    assert per_token is False and len(fresh) == len(features)
    for i, outputs in enumerate(fresh):
        np.testing.assert_array_equal(cache.rows(0, i)[0], outputs[0])


def test_unlabelled_text_is_labelled_by_the_teacher(teacher, mr_small, tmp_path, caplog):
    train, dev = mr_small
    text = tmp_path / "transfer.txt"
    text.write_text("".join(f"an unlabelled sentence number {i}\n" for i in range(40)))
    out = tmp_path / "s"
    assert _distill(teacher, train, dev, out, "--unlabeled", str(text), "--train.max-steps=2") == 0
    cache = TeacherCache(out / "teacher")
    run = load_task(teacher, device="cpu")
    n_train = len(run.fine_tuned.featurize(run.fine_tuned.read(str(train)), run.tokenizer, run.max_length))
    assert len(cache.offsets[0]) - 1 == n_train + 40  # one short sentence, one feature each


def test_a_killed_distillation_resumes_to_the_same_weights(teacher, mr_small, tmp_path):
    train, dev = mr_small
    args = ["--train.epochs=4", "--train.checkpoint-every=1", "--train.batch-size=8"]
    assert _distill(teacher, train, dev, tmp_path / "whole", *args) == 0
    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "bertkit.cli.main",
        "distill",
        "--teacher",
        str(teacher),
        "--student",
        "tiny",
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--output",
        str(killed),
        "--train.lr=1e-3",
        "--train.log-every=1",
        "--device",
        "cpu",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    state = killed / "checkpoint" / "state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["position"]["step"] >= 14:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _distill(teacher, train, dev, killed, *args, "--resume") == 0
    whole = torch.load(tmp_path / "whole/checkpoint/state.pt", weights_only=True)["model"]
    resumed = torch.load(state, weights_only=True)["model"]
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


def test_every_task_family_distils(tiny_dir, mr_dir, wnut16_dir, squad11_dir, tmp_path):
    """regression, ner (softmax and CRF teachers) and qa: teacher, student, and the student predicts."""
    mr_reg = _head_tsv(mr_dir / "regression" / "train.tsv", tmp_path / "reg.tsv", 48)
    ner = head_conll(wnut16_dir / "train.conll", tmp_path / "ner.conll", 24)
    squad = _squad_slice(squad11_dir / "dev.json", tmp_path / "squad.json", 12)
    jobs = {
        "regression": (["--task", "regression"], mr_reg),
        "ner": (["--task", "ner"], ner),
        "ner-crf": (["--task", "ner", "--head", "crf"], ner),
        "qa": (["--task", "qa", "--max-length", "96", "--qa.doc-stride", "48"], squad),
    }
    for name, (task_args, data) in jobs.items():
        teacher = tmp_path / f"{name}-teacher"
        assert (
            cli(
                [
                    "finetune",
                    *task_args,
                    "--model",
                    str(tiny_dir),
                    "--train",
                    str(data),
                    "--dev",
                    str(data),
                    "--output",
                    str(teacher),
                    "--train.epochs=1",
                    "--train.batch-size=8",
                    "--device",
                    "cpu",
                    *(["--max-length", "64"] if name != "qa" else []),
                ]
            )
            == 0
        ), name
        student = tmp_path / f"{name}-student"
        assert (
            cli(
                [
                    "distill",
                    "--teacher",
                    str(teacher),
                    "--student",
                    "tiny",
                    "--train",
                    str(data),
                    "--dev",
                    str(data),
                    "--output",
                    str(student),
                    "--train.epochs=1",
                    "--train.batch-size=8",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        ), name
        run = load_task(student, device="cpu")
        assert run.fine_tuned.name == load_task(teacher, device="cpu").fine_tuned.name
        assert len(predict_file(run, str(data))) > 0


def _head_tsv(src: Path, dst: Path, rows: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    dst.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return dst


def _squad_slice(src: Path, dst: Path, questions: int) -> Path:
    data = json.loads(src.read_text(encoding="utf-8"))
    article = data["data"][0]
    paragraph = dict(article["paragraphs"][0])
    paragraph["qas"] = paragraph["qas"][:questions]
    dst.write_text(json.dumps({"version": "1.1", "data": [{"title": article["title"], "paragraphs": [paragraph]}]}))
    return dst


@pytest.mark.parametrize("option", ["--hidden-weight", "--attention-weight"])
def test_intermediate_layers_learn_the_teachers(teacher, mr_small, tmp_path, option):
    """--hidden-weight: the projected student layers move toward their mapped teacher layers, and the
    projection, trained for distillation only, is not part of the saved student. --attention-weight:
    the student's head-averaged attention maps move toward the teacher's."""
    from safetensors import safe_open
    from torch import nn

    from bertkit.data.collate import collate
    from bertkit.distill import DistillTask, default_layer_map
    from bertkit.model import BertConfig
    from bertkit.train.loop import set_seed

    train, dev = mr_small
    out = tmp_path / "layers"
    args = [option, "1", "--soft-weight", "1", "--train.epochs=6", "--train.seed=7"]
    assert _distill(teacher, train, dev, out, *args) == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "distill_projection" in k]

    run = load_task(teacher, device="cpu")
    student_config = BertConfig.preset("tiny", vocab_size=run.tokenizer.vocab_size, max_position_embeddings=128)
    layer_map = default_layer_map(student_config.num_hidden_layers, 2)
    assert layer_map == [1, 2]
    weights = (1.0, 0.0) if option == "--hidden-weight" else (0.0, 1.0)
    task = DistillTask(run.fine_tuned, None, 2.0, 1.0, False, (run.model, layer_map, *weights))
    examples = run.fine_tuned.read(str(dev))
    batch = collate(run.fine_tuned.featurize(examples, run.tokenizer, run.max_length)[:32], run.tokenizer.pad_id)

    def layer_loss(model) -> float:
        layers: list = []
        hooks = [model.bert.embeddings.register_forward_hook(lambda _m, _i, o: layers.append(o))]
        hooks += [layer.register_forward_hook(lambda _m, _i, o: layers.append(o)) for layer in model.bert.layers]
        model.eval()
        with torch.no_grad():
            model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            value = float(task.layer_loss(model, layers, batch))
        for hook in hooks:
            hook.remove()
        return value

    def student():
        model = run.fine_tuned.build_model(student_config)
        if option == "--hidden-weight":
            model.distill_projection = nn.Linear(128, 32)
        return model

    set_seed(7)  # the student as the run started it
    before = student()
    after = student()
    after.load_state_dict(torch.load(out / "checkpoint" / "state.pt", weights_only=True)["model"])
    assert layer_loss(after) < 0.5 * layer_loss(before)


def test_attention_maps_are_the_models_own():
    """attention_map recomputes what the attention module attends with: its heads' softmax(q k^T / sqrt(d))
    over real keys; applied to the attention weights and values, it gives the module's output."""
    from bertkit.distill import attention_map
    from bertkit.model import BertConfig, SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(BertConfig.preset("tiny", vocab_size=10, attention_probs_dropout_prob=0.0)).eval()
    x = torch.randn(2, 5, 128)
    real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    maps = attention_map(attention, x, real)
    assert maps.shape == (2, 5, 5)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 5))
    assert (maps[1, :, 3:] == 0).all()
    # one head: the map is that head's own weights, so the module's output can be rebuilt from it
    attention.heads = 1
    _, _, v = attention.project(x)
    one = attention_map(attention, x, real)
    expected = attention.out((one @ v[:, 0]).reshape(2, 5, 128))
    with torch.no_grad():
        assert torch.allclose(attention(x, real[:, None, None, :]), expected, atol=1e-5)


def test_students_of_one_teacher_share_its_outputs(teacher, mr_small, tmp_path, caplog):
    import logging

    train, dev = mr_small
    shared = tmp_path / "teacher-outputs"
    assert _distill(teacher, train, dev, tmp_path / "a", "--teacher-cache", str(shared), "--train.max-steps=1") == 0
    written = (shared / "out0.npy").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="bertkit"):
        assert (
            _distill(
                teacher,
                train,
                dev,
                tmp_path / "b",
                "--teacher-cache",
                str(shared),
                "--student",
                "mini",
                "--train.max-steps=1",
            )
            == 0
        )
    assert "are in" in caplog.text and (shared / "out0.npy").stat().st_mtime_ns == written
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bertkit"):  # another seed draws other samples: labelled anew
        assert (
            _distill(
                teacher,
                train,
                dev,
                tmp_path / "c",
                "--teacher-cache",
                str(shared),
                "--train.seed=5",
                "--train.max-steps=1",
            )
            == 0
        )
    assert "the teacher labels" in caplog.text


def test_an_embedding_student_learns_the_teachers_vectors(minilm_dir, corpus_en_dir, tmp_path):
    """--task embed: a tiny student (width 128) learns MiniLM's 384-dimensional vectors through a
    projection; beyond the average vector (what a student that mixed up its targets would learn);
    the student is a sentence-transformers directory, read the same by bertkit, sentence-transformers
    and the exported ONNX graph."""
    from sentence_transformers import SentenceTransformer

    from bertkit.encode import Encoder

    lines = (corpus_en_dir / "corpus.txt").read_text(encoding="utf-8").splitlines()
    texts = [t for t in lines if 40 < len(t) < 200][:48]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "student"
    args = ["distill", "--task", "embed", "--teacher", str(minilm_dir), "--student", "tiny", "--output", str(out)]
    args += ["--unlabeled", str(tmp_path / "texts.txt"), "--dev", str(tmp_path / "texts.txt"), "--max-length=64"]
    assert cli([*args, "--train.epochs=12", "--train.batch-size=8", "--train.lr=2e-3", "--device", "cpu"]) == 0

    teacher = Encoder(minilm_dir, device="cpu").encode(texts)
    mean = teacher.mean(0) / np.linalg.norm(teacher.mean(0))
    average_only = float((teacher @ mean).mean())
    student = Encoder(out, device="cpu")
    assert (student.pooling, student.normalize, student.dim) == ("mean", True, 384)
    ours = student.encode(texts)
    cosine = float((ours * teacher).sum(1).mean())
    assert cosine == pytest.approx(json.loads((out / "metrics.json").read_text())["cosine"], abs=1e-4)
    assert cosine > average_only + 0.15, (cosine, average_only)

    theirs = SentenceTransformer(str(out), device="cpu", local_files_only=True).encode(texts)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert cli(["export", "--model", str(out), "--output", str(tmp_path / "onnx")]) == 0
    onnx = Encoder(tmp_path / "onnx", backend="onnx").encode(texts)
    assert np.abs(ours - onnx).max() <= 1e-4

"""Pretraining: LAMB's update by hand, the MLM + NSP loss against Hugging Face's, the loss normalisation
over micro-batches, `bertkit pretrain` from scratch and continued from MiniLM on data built from real
text, the saved directory in transformers and in `bertkit finetune`, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit.checkpoint import load_model, read_state_dict
from bertkit.cli.main import main as cli
from bertkit.data.collate import collate
from bertkit.model import BertConfig, BertForPreTraining
from bertkit.pretrain import EpochView
from bertkit.tasks.pretrain import PretrainTask
from bertkit.train.optim import Lamb, build_optimizer

# A small from-scratch model: MiniLM's vocab, 2 layers of hidden 32.
SMALL = [
    "--model-size",
    "tiny",
    "--config-overrides.hidden-size=32",
    "--config-overrides.num-attention-heads=2",
    "--config-overrides.max-position-embeddings=64",
]


def build_data(text: Path, out: Path, *options: str) -> Path:
    assert (
        cli(
            [
                "pretrain-data",
                "--input",
                str(text),
                "--vocab",
                "minilm",
                "--output",
                str(out),
                "--max-seq-length",
                "32",
                "--max-predictions",
                "5",
                "--dupe-factor",
                "1",
                *options,
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, corpus_en_dir, minilm_dir) -> Path:
    """The first 60 SQuAD paragraphs of corpus-en (one document a line)."""
    lines = (corpus_en_dir / "corpus.txt").read_text(encoding="utf-8").splitlines()[:60]
    path = tmp_path_factory.mktemp("corpus") / "en.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def nsp_data(tmp_path_factory, corpus) -> Path:
    return build_data(corpus, tmp_path_factory.mktemp("data") / "nsp")


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory, corpus) -> Path:
    """Packed sentences without NSP, masked anew every epoch."""
    return build_data(corpus, tmp_path_factory.mktemp("data") / "mlm", "--no-nsp", "--masking", "dynamic")


def _pretrain(data: Path, out: Path, *extra: str) -> int:
    return cli(
        [
            "pretrain",
            *SMALL,
            "--vocab",
            "minilm",
            "--data",
            str(data),
            "--output",
            str(out),
            "--train.batch-size=8",
            "--train.lr=1e-3",
            "--train.log-every=1",
            "--eval-instances=16",
            "--device",
            "cpu",
            *extra,
        ]
    )


# --- LAMB --------------------------------------------------------------------------------------


def test_lamb_first_step_by_hand():
    """Step 1: m̂ = g, v̂ = g², so the Adam direction is g / (|g| + eps) ≈ sign(g). A matrix moves by
    lr * ||w|| / ||u|| along u = sign(g) + wd * w; a bias by lr * sign(g) (no trust ratio, no decay)."""
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([0.5, -0.5]))
    opt = Lamb(
        [{"params": [w], "weight_decay": 0.1, "adapt": True}, {"params": [b], "weight_decay": 0.0, "adapt": False}],
        lr=0.1,
        eps=0.0,
    )
    w.grad = torch.tensor([[2.0, -1.0]])
    b.grad = torch.tensor([-3.0, 0.25])
    opt.step()
    u = torch.tensor([[1.0, -1.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])  # [1.3, -0.6]
    trust = 5.0 / u.norm()  # 5 / 1.43178 = 3.49215
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * trust * u)
    torch.testing.assert_close(w.detach(), torch.tensor([[2.546020, 4.209529]]))
    torch.testing.assert_close(b.detach(), torch.tensor([0.6, -0.6]))


def test_lamb_step_two_uses_moments_and_zero_norm_weights_get_ratio_one():
    w = torch.nn.Parameter(torch.zeros(2, 2))  # ||w|| = 0: the trust ratio falls back to 1
    opt = Lamb([{"params": [w], "weight_decay": 0.0, "adapt": True}], lr=0.01, eps=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.01))
    w.grad = torch.full((2, 2), 3.0)
    opt.step()
    # m = 0.9*0.1 + 0.3 = 0.39 -> m̂ = 0.39/0.19; v = 0.999*0.001 + 0.009 = 0.009999 -> v̂ = 0.009999/0.001999
    direction = (0.39 / 0.19) / (0.009999 / 0.001999) ** 0.5  # the same in all four entries
    trust = 0.02 / (2 * direction)  # ||w|| = 0.02, ||u|| = 2 * direction
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.01 - 0.01 * trust * direction))


def test_build_optimizer_groups():
    model = BertForPreTraining(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    lamb = build_optimizer(model, 1e-3, 0.01, "lamb")
    assert isinstance(lamb, Lamb)
    assert [(g["weight_decay"], g["adapt"]) for g in lamb.param_groups] == [(0.01, True), (0.0, False)]
    assert all(p.ndim == 1 for p in lamb.param_groups[1]["params"])  # biases and LayerNorm
    adamw = build_optimizer(model, 1e-3, 0.01)
    assert isinstance(adamw, torch.optim.AdamW) and "adapt" not in adamw.param_groups[0]
    assert adamw.defaults["fused"]  # one kernel per tensor, not a dozen


# --- the task ----------------------------------------------------------------------------------


def _features(n=6, T=12, vocab=101, seed=0, nsp=True) -> list[dict]:
    """Features as PretrainingData.feature gives them: unpadded, different lengths and mask counts."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = T - (i % 3) * 2
        ids = torch.randint(5, vocab, (length,), generator=g).tolist()
        positions = sorted(torch.randperm(length - 2, generator=g)[: 1 + i % 3].add(1).tolist())
        feature = {
            "input_ids": ids,
            "token_type_ids": [0] * 5 + [1] * (length - 5),
            "masked_positions": positions,
            "masked_ids": [ids[p] for p in positions],
        }
        for p in positions:
            ids[p] = 4  # [MASK]
        if nsp:
            feature["nsp_label"] = i % 2
        out.append(feature)
    return out


def test_loss_matches_transformers():
    """Our loss (MLM at the gathered masked positions only) equals transformers' BertForPreTraining loss
    (logits over all positions, labels -100 except at the masked ones), on the same random weights."""
    transformers = pytest.importorskip("transformers")
    from bertkit.checkpoint import load_weights

    torch.manual_seed(0)
    cfg = dict(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf = transformers.BertForPreTraining(transformers.BertConfig(**cfg)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    ours = BertForPreTraining(BertConfig(**cfg)).eval()
    assert load_weights(ours, hf.state_dict()).newly_initialised == []
    batch = collate(_features())
    labels = torch.full_like(batch["input_ids"], -100)
    for row in range(len(labels)):
        real = batch["masked_ids"][row] != -100
        labels[row, batch["masked_positions"][row][real]] = batch["masked_ids"][row][real]
    with torch.no_grad():
        expected = hf(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=labels,
            next_sentence_label=batch["nsp_label"],
        ).loss
        got = PretrainTask(nsp=True).loss(ours, batch)
    assert abs(got.item() - expected.item()) <= 1e-5
    # Without NSP only the MLM term is left.
    with torch.no_grad():
        mlm_only = hf(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=labels,
        ).prediction_logits
        expected_mlm = torch.nn.functional.cross_entropy(mlm_only.flatten(0, 1), labels.flatten())
        got_mlm = PretrainTask(nsp=False).loss(ours, batch)
    assert abs(got_mlm.item() - expected_mlm.item()) <= 1e-5


def test_split_batches_with_global_counts_add_up_to_the_whole():
    """Two micro-batches (or two processes) with the step's total counts give the whole batch's mean loss,
    although they hold 1+2+3 and 1+2+3 masked tokens in different rows (a mean of means would not)."""
    torch.manual_seed(0)
    model = BertForPreTraining(
        BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48)
    ).eval()
    task = PretrainTask()
    features = _features(n=5)
    whole = collate(features)
    parts = [collate(features[:2]), collate(features[2:])]
    totals = {k: sum(task.loss_counts(p)[k] for p in parts) for k in ("masked", "examples")}
    assert totals == task.loss_counts(whole) == {"masked": 1 + 2 + 3 + 1 + 2, "examples": 5}
    with torch.no_grad():
        split = sum(task.loss(model, p, totals) for p in parts)
        means = sum(task.loss(model, p) for p in parts) / 2
        assert abs(split.item() - task.loss(model, whole).item()) <= 1e-6
        assert abs(means.item() - task.loss(model, whole).item()) > 1e-4


def test_evaluation_metrics_pool_tokens():
    torch.manual_seed(0)
    model = BertForPreTraining(
        BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48)
    ).eval()
    task = PretrainTask()
    features = [{**f, "example": i} for i, f in enumerate(_features(n=6))]
    outputs = [task.forward(model, collate(features[:4])), task.forward(model, collate(features[4:]))]
    preds = task.decode(outputs, features, features)
    metrics = task.metrics(preds, features)
    assert sum(p["mlm_count"] for p in preds) == 12  # 1+2+3 masked tokens, twice
    with torch.no_grad():  # the pooled MLM loss is the per-token mean over the whole set
        assert metrics["mlm_loss"] == pytest.approx(
            PretrainTask(nsp=False).loss(model, collate(features)).item(), abs=1e-5
        )
    assert metrics["perplexity"] == pytest.approx(float(torch.tensor(metrics["mlm_loss"]).exp()), rel=1e-6)
    assert set(metrics) == {"mlm_accuracy", "mlm_loss", "perplexity", "nsp_accuracy"}


def test_epoch_view_remasks_dynamic_data(mlm_data, nsp_data):
    from bertkit.data.pretraining import PretrainingData

    data = PretrainingData(mlm_data)
    assert not data.nsp and data.dynamic
    views = [EpochView(data, range(10, 20), epoch) for epoch in (0, 1)]
    assert len(views[0]) == 10
    assert views[0][3] == data.feature(13, 0) and views[1][3] == data.feature(13, 1)
    assert any(views[0][i]["masked_positions"] != views[1][i]["masked_positions"] for i in range(10))
    static = PretrainingData(nsp_data)
    assert EpochView(static, range(5), 0)[2] == EpochView(static, range(5), 3)[2]


# --- bertkit pretrain ----------------------------------------------------------------------------


def test_pretrain_from_scratch_loads_in_transformers_and_finetunes(nsp_data, mr_dir, tmp_path, capsys):
    out = tmp_path / "scratch"
    assert _pretrain(nsp_data, out, "--train.max-steps=6", "--train.eval-every=3", "--train.optimizer=lamb") == 0
    printed = json.loads(capsys.readouterr().out)
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "pretrain.yaml",
        "metrics.json",
        "metrics.jsonl",
        "training.png",
        "checkpoint/state.pt",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (2, 32, 128)
    assert set(printed) == {"mlm_accuracy", "mlm_loss", "perplexity", "nsp_accuracy"}
    assert json.loads((out / "metrics.json").read_text()) == printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "dev" in r] == [3, 6]
    assert records[-1]["dev"] == printed

    transformers = pytest.importorskip("transformers")
    hf, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = load_model(out, BertForPreTraining)
    batch = collate(_features(vocab=30522))
    with torch.no_grad():
        expected = hf.eval()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
        )
        mlm, nsp = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert (mlm - expected.prediction_logits).abs().max().item() <= 1e-4
    assert (nsp - expected.seq_relationship_logits).abs().max().item() <= 1e-4

    # ... and bertkit finetune takes it as a pretrained model.
    train = tmp_path / "train.tsv"
    rows = (mr_dir / "train.tsv").read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join(rows[:33]) + "\n", encoding="utf-8")
    assert (
        cli(
            [
                "finetune",
                "--task",
                "classify",
                "--model",
                str(out),
                "--train",
                str(train),
                "--dev",
                str(train),
                "--output",
                str(tmp_path / "ft"),
                "--max-length",
                "32",
                "--train.epochs=1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "accuracy" in json.loads((tmp_path / "ft/metrics.json").read_text())


def test_continue_minilm_gets_a_fresh_tied_mlm_head(nsp_data, minilm_dir, tmp_path, caplog):
    out = tmp_path / "minilm-more"
    with caplog.at_level(logging.INFO, logger="bertkit"):
        assert (
            cli(
                [
                    "pretrain",
                    "--model",
                    "minilm",
                    "--data",
                    str(nsp_data),
                    "--output",
                    str(out),
                    "--train.max-steps=2",
                    "--train.batch-size=4",
                    "--eval-instances=8",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    said = [r.getMessage() for r in caplog.records if "has no MLM head" in r.getMessage()]
    assert len(said) == 1 and "mlm.dense.weight" in said[0] and "nsp.weight" in said[0]
    assert "tied to the word embeddings" in said[0]
    before, after = read_state_dict(minilm_dir), read_state_dict(out)
    name = "encoder.layer.0.attention.self.query.weight"
    assert (after["bert." + name] - before[name]).abs().max() > 0  # trained
    assert (after["bert." + name] - before[name]).abs().max() < 1e-3  # but only two small steps away
    transformers = pytest.importorskip("transformers")
    hf, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(hf.cls.predictions.decoder.weight, hf.bert.embeddings.word_embeddings.weight)


def test_without_nsp_the_pooler_and_nsp_head_stay_as_they_were(mlm_data, tmp_path):
    """MLM-only data: BertForPreTraining all the same; pooler and NSP head are carried through untouched."""
    out = tmp_path / "mlm"
    assert _pretrain(mlm_data, out, "--train.max-steps=3", "--dev", str(mlm_data)) == 0  # dev: its first 16
    torch.manual_seed(42)  # the model pretrain builds with the default seed
    fresh = BertForPreTraining(
        BertConfig.preset(
            "tiny",
            vocab_size=30522,
            hidden_size=32,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=64,
        )
    )
    trained = torch.load(out / "checkpoint/state.pt", weights_only=True)["model"]
    for name, value in fresh.state_dict().items():
        if name.startswith(("nsp.", "bert.pooler.")):
            assert torch.equal(trained[name], value), name
        elif name == "bert.embeddings.word.weight":
            assert not torch.equal(trained[name], value)
    assert set(json.loads((out / "metrics.json").read_text())) == {"mlm_accuracy", "mlm_loss", "perplexity"}


def test_held_out_from_repeated_data_says_it_is_optimistic(corpus, nsp_data, tmp_path, caplog):
    """With dupe_factor > 1 the end of --data repeats training text: pretrain says so and names --dev;
    with dupe_factor 1 (nsp_data) or with --dev it says nothing."""
    repeated = build_data(corpus, tmp_path / "dupes", "--dupe-factor", "2")
    runs = {"dupes": (repeated, []), "once": (nsp_data, []), "dev": (repeated, ["--dev", str(nsp_data)])}
    for name, (data, extra) in runs.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bertkit"):
            assert _pretrain(data, tmp_path / f"run-{name}", "--train.max-steps=1", *extra) == 0
        said = [r.getMessage() for r in caplog.records if "held-out" in r.getMessage()]
        if name == "dupes":
            assert len(said) == 1 and "dupe_factor 2" in said[0] and "--dev DIR" in said[0], said
        else:
            assert not said, (name, said)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model-size", "tiny", "--vocab", "minilm", "--eval-instances=100000"], "leaves nothing to train on"),
        (["--model-size", "tiny"], "say which model to train"),
        (["--vocab", "minilm"], "pass --model-size"),
        (["--model", "minilm", "--model-size", "tiny"], "leave out --model-size and --vocab"),
        (["--model", "minilm", "--config-overrides.hidden-size=64"], "would change the shape of minilm"),
        (["--model-size", "tiny", "--vocab", "zh-vocab"], "rebuild the data with the model's vocab.txt"),
        (["--model-size", "tiny", "--vocab", "minilm", "--dev", "MLM_DATA"], "--dev MLM_DATA was built with nsp=False"),
    ],
)
def test_errors_say_how_to_fix(nsp_data, mlm_data, minilm_dir, zh_vocab_dir, tmp_path, capsys, args, message):
    args = [str(mlm_data) if a == "MLM_DATA" else a for a in args]
    message = message.replace("MLM_DATA", str(mlm_data))
    assert cli(["pretrain", "--data", str(nsp_data), "--output", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertkit pretrain: error:") and message in err
    assert not (tmp_path / "out").exists()


def test_resume_after_kill_matches_uninterrupted_run(mlm_data, tmp_path):
    """SIGKILL a run mid-training (dynamic masking, several epochs, max_steps), resume it: the final
    weights equal those of a run never stopped, and metrics.jsonl holds each step once."""
    args = [
        *SMALL,
        "--vocab",
        "minilm",
        "--data",
        str(mlm_data),
        "--train.batch-size=32",
        "--train.lr=1e-3",
        "--train.log-every=1",
        "--eval-instances=16",
        "--train.max-steps=30",
        "--train.checkpoint-every=1",
        "--train.eval-every=10",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # both runs: the same thread count, so the same float sums

    def run(out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "bertkit.cli.main", "pretrain", *args, "--output", str(out), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    assert run(tmp_path / "whole").wait() == 0
    killed = tmp_path / "killed"
    proc = run(killed)
    state = killed / "checkpoint" / "state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill once it is past an epoch and an evaluation
        if state.is_file() and torch.load(state, weights_only=True)["position"]["step"] >= 14:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    position = torch.load(state, weights_only=True)["position"]
    assert 14 <= position["step"] < 30 and position["epoch"] >= 1
    assert run(killed, "--resume").wait() == 0

    whole = torch.load(tmp_path / "whole/checkpoint/state.pt", weights_only=True)
    resumed = torch.load(state, weights_only=True)
    assert resumed["position"]["step"] == 30 and resumed["position"] == whole["position"]
    for name in whole["model"]:
        torch.testing.assert_close(resumed["model"][name], whole["model"][name], rtol=0, atol=0, msg=name)

    def log(run_dir):
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert log(killed) == log(tmp_path / "whole")
    assert [r["step"] for r in log(killed) if "dev" in r] == [10, 20, 30]


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs" / "pretrain").glob("*.yaml")), ids=lambda p: p.stem
)
def test_pretrain_configs_parse_and_say_how_to_run(path, minilm_dir, zh_vocab_dir):
    from bertkit.config import parse_args
    from bertkit.fetch import resolve_model
    from bertkit.pretrain import PretrainConfig

    text = path.read_text(encoding="utf-8")
    assert text.startswith("#") and "bertkit pretrain-data --input" in text
    assert f"bertkit pretrain --config configs/pretrain/{path.name}" in text
    cfg = parse_args(PretrainConfig, ["--config", str(path)], prog="test")
    assert cfg.train.max_steps > 0 and cfg.data.startswith("runs/pretrain-data/")
    assert (resolve_model(cfg.model or cfg.vocab) / "vocab.txt").is_file()

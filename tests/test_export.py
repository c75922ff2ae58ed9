"""ONNX export: every head against PyTorch on padded and unpadded batches of new shapes, the real MiniLM
in fp32 and int8 through the Encoder, the int8 accuracy gate on a tiny fine-tuned model, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_finetune

from bertkit.checkpoint import save_model
from bertkit.cli.main import main as cli
from bertkit.data.readers import read_texts
from bertkit.encode import Encoder
from bertkit.errors import BertkitError
from bertkit.export import export_dir
from bertkit.export.onnx import export_onnx, parity
from bertkit.export.quantize import check_drop, per_token_scaling, quantize_int8, search_int8, weight_matmuls
from bertkit.model import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bertkit.onnx_model import OnnxModel, load_onnx
from bertkit.tokenizer import BertTokenizer

TINY = dict(
    vocab_size=1200,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)
HEADS = {
    "base": lambda c: BertModel(c),
    "classify": lambda c: BertForSequenceClassification(c, 3),
    "ner": lambda c: BertForTokenClassification(c, 5),
    "qa": lambda c: BertForQuestionAnswering(c),
}


def _batch(lengths: list[int], width: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (len(lengths), width), generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = (torch.arange(width)[None, :] >= width // 2).long() * mask  # a second segment, as in pairs
    return ids * mask, mask, types


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_matches_torch_on_new_shapes(head, tmp_path):
    torch.manual_seed(0)
    model = HEADS[head](BertConfig(**TINY)).eval()
    export_onnx(model, tmp_path / "model.onnx")  # traced on a [2, 8] batch
    onnx_model = OnnxModel(tmp_path / "model.onnx")
    unpadded = [_batch([13] * 3, 13, 1), _batch([1], 1, 2)]
    padded = [_batch([21, 4, 17, 9], 21, 3), _batch([30, 2], 30, 4)]
    for batches in (unpadded, padded):
        report = parity(model, onnx_model, batches)
        assert report["max_abs_diff"] <= 1e-4, (head, report)
        assert report["worst_cosine"] >= 0.99999
    # The same structure as the torch model, so tasks and the Encoder use it unchanged.
    ids, mask, types = padded[0]
    ours, theirs = model(ids, mask, types), onnx_model(ids, mask, types)
    assert type(ours) is type(theirs)
    if head == "base":
        assert theirs.last_hidden_state.shape == (4, 21, 32) and theirs.pooler_output.shape == (4, 32)
    if head == "qa":
        assert [t.shape for t in theirs] == [(4, 21), (4, 21)]


def test_padding_is_masked_in_an_unpadded_trace(tmp_path):
    """A padded row gives the same vectors for its real tokens as the row alone (mask applied)."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY)).eval()
    export_onnx(model, tmp_path / "model.onnx")
    onnx_model = OnnxModel(tmp_path / "model.onnx")
    ids, mask, types = _batch([6, 11], 11, 5)
    alone = onnx_model(ids[:1, :6], mask[:1, :6], types[:1, :6]).last_hidden_state
    padded = onnx_model(ids, mask, types).last_hidden_state[:1, :6]
    assert (alone - padded).abs().max() <= 1e-5
    # The graph lost torch's length check; OnnxModel keeps it when it knows the config.
    too_long = torch.ones((1, TINY["max_position_embeddings"] + 1), dtype=torch.long)
    with pytest.raises(BertkitError, match="longer than the model's max_position_embeddings"):
        OnnxModel(tmp_path / "model.onnx", BertConfig(**TINY))(too_long)


def test_ner_crf_head_exports_emissions_and_keeps_its_transitions(tmp_path, minilm_dir):
    from bertkit.tasks import get_task

    tokenizer = BertTokenizer.from_dir(minilm_dir)
    task = get_task("ner", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], head="crf")
    torch.manual_seed(0)
    model = task.build_model(BertConfig(**{**TINY, "vocab_size": tokenizer.vocab_size})).eval()
    torch.nn.init.normal_(model.crf.transitions)
    save_model(model, tmp_path / "ner", tokenizer)
    (tmp_path / "ner" / "task.json").write_text(json.dumps({**task.state(), "max_length": 32}))
    report = export_dir(tmp_path / "ner", tmp_path / "out")
    assert report["task"] == "ner" and report["fp32"]["max_abs_diff"] <= 1e-4
    onnx_model = load_onnx(tmp_path / "out")
    ids, mask, types = _batch([9, 5], 9, 6)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "words": torch.where(mask.bool(), torch.arange(9), -1),
    }
    ours, theirs = task.forward(model, batch), task.forward(onnx_model, batch)
    assert all(torch.equal(ours["crf"][k], theirs["crf"][k]) for k in ours["crf"])
    assert all((a - b).abs().max() <= 1e-4 for a, b in zip(ours["logits"], theirs["logits"]))


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory, minilm_dir):
    out = tmp_path_factory.mktemp("minilm-onnx")
    assert (
        cli(["export", "--model", str(minilm_dir), "--format", "onnx", "--quantize", "int8", "--output", str(out)]) == 0
    )
    return out


def test_minilm_export_report_and_directory(minilm_onnx):
    for name in (
        "config.json",
        "vocab.txt",
        "model.onnx",
        "model.int8.onnx",
        "export.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ):
        assert (minilm_onnx / name).is_file(), name
    report = json.loads((minilm_onnx / "export.json").read_text())
    assert report["fp32"]["max_abs_diff"] <= 1e-4 and report["fp32"]["worst_cosine"] >= 0.99999
    assert report["int8"]["worst_cosine"] >= 0.95  # raw hidden states of every token; vectors below


def test_minilm_sentence_vectors_fp32_and_int8(minilm_dir, minilm_onnx, mr_dir):
    texts = read_texts(mr_dir / "test.tsv")[:200]  # held out: the default calibration is MR dev
    reference = Encoder(minilm_dir, device="cpu").encode(texts)
    fp32 = Encoder(minilm_onnx, backend="onnx").encode(texts)
    int8 = Encoder(minilm_onnx, backend="onnx-int8").encode(texts)
    cos_fp32 = (reference * fp32).sum(1)  # all three are L2-normalised (MiniLM's Normalize module)
    cos_int8 = (reference * int8).sum(1)
    assert cos_fp32.min() >= 0.9999 and np.abs(reference - fp32).max() <= 1e-4
    # Per-token scaling and the fp32-fallback search keep the worst sentence at --min-cosine 0.99 on
    # held-out text (plain dynamic int8: worst 0.978 on 1,000 MR test sentences).
    assert cos_int8.mean() >= 0.995 and cos_int8.min() >= 0.99
    report = json.loads((minilm_onnx / "export.json").read_text())["int8"]
    assert report["held_out"]["worst"] >= 0.99 and report["held_out"]["examples"] == 500
    assert report["per_token"] and report["plain_int8_worst"] < report["search_target"]  # plain int8 misses it
    # The published vector of the model card's sentence, through the exported graph.
    v = Encoder(minilm_onnx, backend="onnx").encode(["This is an example sentence"])[0]
    assert round(float(v[0]), 4) == 0.0677 and round(float(v[1]), 4) == 0.0635


def test_encode_cli_with_onnx_backend(minilm_onnx, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a quiet, moving film\nloud and dull\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    assert (
        cli(["encode", "--model", str(minilm_onnx), "--input", str(texts), "--output", str(out), "--backend", "onnx"])
        == 0
    )
    expected = Encoder(minilm_onnx, backend="onnx").encode(["a quiet, moving film", "loud and dull"])
    assert np.abs(np.load(out) - expected).max() <= 1e-6


@pytest.fixture(scope="module")
def tiny_classify(tmp_path_factory, tiny_dir, mr_small):
    train, dev = mr_small
    out = tmp_path_factory.mktemp("classify")
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1") == 0
    return out, dev


def test_int8_gate_reports_before_and_after(tiny_classify, tmp_path):
    model_dir, dev = tiny_classify
    out = tmp_path / "onnx"
    assert (
        cli(["export", "--model", str(model_dir), "--quantize", "int8", "--dev", str(dev), "--output", str(out)]) == 0
    )
    report = json.loads((out / "export.json").read_text())
    gate = report["gate"]
    assert report["task"] == "classify" and gate["metric"] == "accuracy" and gate["passed"]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert gate["before"] == pytest.approx(metrics["accuracy"])  # fp32 torch scores what training did
    assert abs(gate["before"] - gate["after"]) <= 0.01 and gate["drop_points"] <= 1.0
    assert report["fp32"]["max_abs_diff"] <= 1e-4
    # The exported classifier predicts through the task code unchanged.
    from bertkit.export import dev_metric
    from bertkit.inference import load_task

    run = load_task(model_dir, device="cpu")
    assert dev_metric(run.task, load_onnx(out), run.tokenizer, run.max_length, str(dev)) == pytest.approx(
        gate["before"]
    )


def test_int8_gate_refuses_a_drop_unless_forced(tiny_classify, tmp_path, capsys):
    model_dir, dev = tiny_classify
    args = [
        "export",
        "--model",
        str(model_dir),
        "--quantize",
        "int8",
        "--dev",
        str(dev),
        "--max-drop",
        "-1",
    ]  # any result now counts as too large a drop
    assert cli(args + ["--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "int8 quantisation lowers dev accuracy" in err and "--force" in err
    assert not (tmp_path / "a" / "model.int8.onnx").exists()
    assert cli(args + ["--output", str(tmp_path / "b"), "--force"]) == 0
    assert (tmp_path / "b" / "model.int8.onnx").is_file()


def test_per_token_scaling_is_exact_in_fp32(tmp_path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY), 3).eval()
    export_onnx(model, tmp_path / "model.onnx")
    per_token_scaling(tmp_path / "model.onnx", tmp_path / "scaled.onnx")
    batches = [_batch([21, 4, 17, 9], 21, 3), _batch([1], 1, 2)]
    for path in (tmp_path / "model.onnx", tmp_path / "scaled.onnx"):
        assert parity(model, OnnxModel(path), batches)["max_abs_diff"] <= 1e-4
    names = list(weight_matmuls(tmp_path / "model.onnx"))
    assert len(names) == 2 * 4  # per layer: fused qkv, attention out, feed-forward up and down (heads: Gemm)
    assert list(weight_matmuls(tmp_path / "scaled.onnx")) == names


def _quantised(path) -> set[str]:
    import onnx

    return {n.name.removesuffix("_quant") for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulInteger"}


def test_search_keeps_the_damaging_matmuls_in_fp32_and_no_more(tmp_path):
    torch.manual_seed(0)
    export_onnx(BertModel(BertConfig(**TINY)).eval(), tmp_path / "model.onnx")
    names = list(weight_matmuls(tmp_path / "model.onnx"))
    quantize_int8(tmp_path / "model.onnx", tmp_path / "all.onnx")
    assert _quantised(tmp_path / "all.onnx") >= set(names)  # and the pooler's Gemm, which stays outside the search
    bad = {names[1]: 0.004, names[5]: 0.003}  # what quantising each costs the worst example

    def cosines(path):
        return np.array([1.0 - sum(bad.get(n, 0.0001) for n in _quantised(path)), 1.0])

    record = search_int8(tmp_path / "model.onnx", tmp_path / "int8.onnx", cosines, 0.997)
    assert record["kept_fp32"] == [names[1], names[5]]  # the worst first, then only as many as needed
    assert _quantised(tmp_path / "int8.onnx") & set(names) == set(names) - set(bad)
    assert search_int8(tmp_path / "model.onnx", tmp_path / "int8.onnx", cosines, 0.99)["kept_fp32"] == []
    # A bound nothing meets: everything ends in fp32 and the search stops there.
    assert len(
        search_int8(tmp_path / "model.onnx", tmp_path / "int8.onnx", lambda p: np.zeros(2), 0.9)["kept_fp32"]
    ) == len(names)


def test_int8_held_out_gate_refuses_unless_forced(tiny_classify, tmp_path, capsys):
    model_dir, dev = tiny_classify
    texts = tmp_path / "calibration.txt"
    texts.write_text("".join(f"sentence number {i} is here\n" for i in range(12)))
    args = ["export", "--model", str(model_dir), "--quantize", "int8", "--calibration", str(texts), "--min-cosine", "1"]
    assert cli(args + ["--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "held-out calibration text" in err and "--min-cosine" in err and "--force" in err
    assert not (tmp_path / "a").exists() or not (tmp_path / "a" / "model.int8.onnx").exists()
    assert cli(args + ["--output", str(tmp_path / "b"), "--force"]) == 0
    report = json.loads((tmp_path / "b" / "export.json").read_text())["int8"]
    assert report["held_out"]["examples"] == 6 and report["calibration"]["examples"] == 6
    assert set(report["held_out"]) >= {"mean", "p1", "p5", "worst"}
    assert report["per_token"] and "ReduceMax" in _ops(tmp_path / "b" / "model.int8.onnx")
    # No bound: plain dynamic int8, the fastest graph, without the per-token operators.
    assert cli(args[:-1] + ["0", "--output", str(tmp_path / "c")]) == 0
    report = json.loads((tmp_path / "c" / "export.json").read_text())["int8"]
    assert not report["per_token"] and report["kept_fp32"] == []
    assert "ReduceMax" not in _ops(tmp_path / "c" / "model.int8.onnx")


def _ops(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_drop_is_counted_in_points_of_the_tasks_scale():
    assert check_drop("classify", "accuracy", 0.900, 0.891, 1.0, False)["drop_points"] == pytest.approx(0.9)
    with pytest.raises(BertkitError, match="drop of 1.10 points"):
        check_drop("classify", "accuracy", 0.900, 0.889, 1.0, False)
    assert check_drop("qa", "f1", 88.0, 87.2, 1.0, False)["passed"]  # QA's F1 runs 0-100
    with pytest.raises(BertkitError):
        check_drop("qa", "f1", 88.0, 86.5, 1.0, False)


def test_bad_input_is_a_clear_error(tmp_path, minilm_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(BertkitError, match="no weights in"):
        export_dir(empty, tmp_path / "out")
    assert cli(["export", "--model", str(minilm_dir), "--format", "tflite", "--output", str(tmp_path / "o")]) == 2
    assert "tflite" in capsys.readouterr().err
    with pytest.raises(BertkitError, match="unknown export format"):
        export_dir(minilm_dir, tmp_path / "o", fmt="tflite")
    with pytest.raises(BertkitError, match="--quantize int8"):
        export_dir(minilm_dir, tmp_path / "o", quantize="int4")
    with pytest.raises(BertkitError, match="--dev needs a fine-tuned model"):
        export_dir(minilm_dir, tmp_path / "o", dev="mr:dev")
    with pytest.raises(BertkitError, match="has no model.onnx"):
        Encoder(minilm_dir, backend="onnx")
    with pytest.raises(BertkitError, match="unknown backend"):
        Encoder(minilm_dir, backend="tensorrt")


def test_serve_evaluate_and_predict_run_the_exported_graphs(tiny_classify, minilm_onnx, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from bertkit.cli.serve import ServeConfig, build_app
    from bertkit.inference import evaluate_file, load_task, predict_file

    model_dir, dev = tiny_classify
    onnx_dir = tmp_path / "classify-onnx"
    assert cli(["export", "--model", str(model_dir), "--output", str(onnx_dir)]) == 0
    torch_metrics = json.loads((model_dir / "metrics.json").read_text())
    onnx_metrics = evaluate_file(load_task(onnx_dir, backend="onnx"), str(dev))
    assert onnx_metrics["accuracy"] == pytest.approx(torch_metrics["accuracy"])
    assert (
        cli(
            [
                "predict",
                "--model",
                str(onnx_dir),
                "--input",
                str(dev),
                "--output",
                str(tmp_path / "p.jsonl"),
                "--backend",
                "onnx",
            ]
        )
        == 0
    )
    onnx_rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    torch_rows = predict_file(load_task(model_dir), str(dev))
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in torch_rows]

    cfg = ServeConfig(model=str(minilm_onnx), task=[f"sentiment={onnx_dir}"], backend="onnx")
    with TestClient(build_app(cfg)) as client:
        got = client.post("/encode", json={"texts": ["This is an example sentence"]}).json()["vectors"][0]
        assert got[:2] == pytest.approx([0.0677, 0.0635], abs=1e-4)
        r = client.post("/encode", json={"texts": ["a"], "layer": 2})
        assert r.status_code == 422 and "last layer only" in r.json()["error"]
        pred = client.post("/predict/sentiment", json={"texts": [torch_rows[0]["text"]]}).json()["predictions"][0]
        assert pred["label"] == torch_rows[0]["label"]
        assert pred["probabilities"] == pytest.approx(torch_rows[0]["probabilities"], abs=1e-4)

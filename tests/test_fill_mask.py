"""fill-mask and nsp: a pretrained model's own heads through `bertkit predict --task`, against
transformers' BertForMaskedLM and BertForNextSentencePrediction on the same weights."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from helpers import tiny_config

from bertkit.checkpoint import save_model
from bertkit.cli.main import main as cli
from bertkit.model import BertForPreTraining
from bertkit.tokenizer import BertTokenizer


def pretrained_dir(path, vocab_dir):
    """A tiny BertForPreTraining (random weights, MLM and NSP heads) as `bertkit pretrain` saves it."""
    tokenizer = BertTokenizer.from_dir(vocab_dir)
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config(tokenizer.vocab_size))
    with torch.no_grad():  # larger weights than the initialisation: clearly ranked predictions
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return save_model(model, path, tokenizer)


@pytest.fixture(scope="module")
def en_pretrained(tmp_path_factory, minilm_dir):
    return pretrained_dir(tmp_path_factory.mktemp("pre-en"), minilm_dir)


@pytest.fixture(scope="module")
def zh_pretrained(tmp_path_factory, zh_vocab_dir):
    return pretrained_dir(tmp_path_factory.mktemp("pre-zh"), zh_vocab_dir)


def predict(model_dir, task, lines, tmp_path, name="in.txt") -> list[dict]:
    src = tmp_path / name
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / f"{name}.jsonl"
    args = ["predict", "--task", task, "--model", str(model_dir), "--input", str(src), "--output", str(out)]
    assert cli([*args, "--device", "cpu", "--overwrite"]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_fill_mask_matches_transformers(en_pretrained, tmp_path, capsys):
    texts = ["paris is the [MASK] of france.", "the [MASK] sat on the [MASK] all day long"]
    rows = predict(en_pretrained, "fill-mask", texts, tmp_path)
    hf = transformers.BertForMaskedLM.from_pretrained(en_pretrained).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(en_pretrained)
    for text, row in zip(texts, rows):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            probs = hf(**enc).logits[0].softmax(-1)
        positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
        assert [m["position"] for m in row["masks"]] == positions
        for m, pos in zip(row["masks"], positions):
            top = probs[pos].topk(5)
            assert [p["id"] for p in m["predictions"]] == top.indices.tolist()
            assert [p["score"] for p in m["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-5)
            assert [p["token"] for p in m["predictions"]] == tok.convert_ids_to_tokens(top.indices)
        tops = [m["predictions"][0]["token"] for m in row["masks"]]
        assert "[MASK]" not in row["filled"] and all(t.removeprefix("##") in row["filled"] for t in tops)
    capsys.readouterr()


def test_fill_mask_chinese_one_prediction_per_masked_character(zh_pretrained, tmp_path, capsys):
    rows = predict(zh_pretrained, "fill-mask", ["北京是中国的[MASK][MASK]。"], tmp_path)
    masks = rows[0]["masks"]
    assert [m["position"] for m in masks] == [7, 8]  # [CLS] 北 京 是 中 国 的 [MASK] [MASK] 。 [SEP]
    first = [m["predictions"][0]["token"] for m in masks]
    assert rows[0]["filled"] == f"北京是中国的{first[0]}{first[1]}。"
    capsys.readouterr()


def test_nsp_matches_transformers(en_pretrained, tmp_path, capsys):
    pairs = [("the cat sat down.", "it was tired."), ("stocks fell today.", "penguins live in the south.")]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps({"text": a, "text_b": b}) + "\n" for a, b in pairs))
    out = tmp_path / "nsp.jsonl"
    args = ["predict", "--task", "nsp", "--model", str(en_pretrained), "--input", str(src), "--output", str(out)]
    assert cli([*args, "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    hf = transformers.BertForNextSentencePrediction.from_pretrained(en_pretrained).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(en_pretrained)
    for (a, b), row in zip(pairs, rows):
        with torch.no_grad():
            probs = hf(**tok(a, b, return_tensors="pt")).logits[0].softmax(-1).tolist()
        assert [row["probabilities"]["is_next"], row["probabilities"]["not_next"]] == pytest.approx(probs, abs=1e-5)
        assert row["label"] == ("is_next" if probs[0] > probs[1] else "not_next")
    capsys.readouterr()


def test_errors_say_how_to_fix(en_pretrained, tiny_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("paris is the [MASK] of france.\n")
    out = str(tmp_path / "o.jsonl")
    # an encoder without the masked-LM head (MiniLM-like)
    assert cli(["predict", "--task", "fill-mask", "--model", str(tiny_dir), "--input", str(src), "--output", out]) == 2
    assert "has no weights for the head of task `fill-mask`" in capsys.readouterr().err
    src.write_text("no mask here\n")
    assert (
        cli(["predict", "--task", "fill-mask", "--model", str(en_pretrained), "--input", str(src), "--output", out])
        == 2
    )
    assert "line 1: no [MASK] in the text" in capsys.readouterr().err
    src.write_text("only one sentence\n")
    assert cli(["predict", "--task", "nsp", "--model", str(en_pretrained), "--input", str(src), "--output", out]) == 2
    assert "line 1: no `text_b`" in capsys.readouterr().err


def test_evaluate_scores_the_pretraining_heads(en_pretrained, tmp_path, capsys):
    """evaluate --task fill-mask / nsp: accuracy of the model's own heads, as transformers predicts."""
    hf_mlm = transformers.BertForMaskedLM.from_pretrained(en_pretrained).eval()
    hf_nsp = transformers.BertForNextSentencePrediction.from_pretrained(en_pretrained).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(en_pretrained)
    texts = ["paris is the [MASK] of france.", "the cat sat on the [MASK].", "he [MASK] home late."]
    golds = ["capital", "mat", "came"]
    hits = []
    for text, gold in zip(texts, golds):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            logits = hf_mlm(**enc).logits[0]
        position = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0])
        hits.append(int(logits[position].argmax()) == tok.convert_tokens_to_ids(gold))
    data = tmp_path / "mlm.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in zip(texts, golds)))
    assert cli(["evaluate", "--task", "fill-mask", "--model", str(en_pretrained), "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(sum(hits) / len(hits))

    pairs = [("the cat sat down.", "it was tired.", "is_next"), ("stocks fell.", "penguins swim.", "not_next")]
    data = tmp_path / "nsp.jsonl"
    data.write_text("".join(json.dumps({"text": a, "text_b": b, "label": y}) + "\n" for a, b, y in pairs))
    right = []
    for a, b, y in pairs:
        with torch.no_grad():
            first = int(hf_nsp(**tok(a, b, return_tensors="pt")).logits[0].argmax())
        right.append(("is_next", "not_next")[first] == y)
    assert cli(["evaluate", "--task", "nsp", "--model", str(en_pretrained), "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(sum(right) / len(right))


def test_the_server_serves_the_pretraining_heads(en_pretrained, tmp_path, capsys):
    """serve --task NAME=fill-mask:DIR / NAME=nsp:DIR: /predict/NAME answers as `bertkit predict --task`."""
    from fastapi.testclient import TestClient

    from bertkit.cli.serve import parse_tasks
    from bertkit.encode.server import PredictEngine, create_app
    from bertkit.inference import load_task

    tasks = parse_tasks([f"fill=fill-mask:{en_pretrained}", f"next=nsp:{en_pretrained}", "plain=runs/mr"])
    assert tasks["plain"] == ("runs/mr", None) and tasks["fill"] == (str(en_pretrained), "fill-mask")
    engines = {n: PredictEngine(load_task(d, device="cpu", task=t)) for n, (d, t) in tasks.items() if t}
    text = "paris is the [MASK] of france."
    expected = predict(en_pretrained, "fill-mask", [text], tmp_path)[0]
    with TestClient(create_app(None, engines)) as client:
        answer = client.post("/predict/fill", json={"texts": [text]}).json()["predictions"][0]
        assert answer["filled"] == expected["filled"]
        assert answer["masks"][0]["predictions"][0]["id"] == expected["masks"][0]["predictions"][0]["id"]
        pair = {"inputs": [{"text": "the cat sat down.", "text_b": "it was tired."}]}
        assert client.post("/predict/next", json=pair).json()["predictions"][0]["label"] in ("is_next", "not_next")
        assert client.post("/predict/next", json={"texts": ["one sentence"]}).status_code == 422
        # /fill-mask and /nsp name the kind: the one task of that kind answers, as /predict/NAME does
        assert client.post("/fill-mask", json={"texts": [text]}).json()["predictions"][0] == answer
        assert client.post("/nsp", json=pair).json()["predictions"][0]["label"] in ("is_next", "not_next")
    with TestClient(create_app(None, {"fill": engines["fill"]})) as client:
        missing = client.post("/nsp", json=pair)
        assert missing.status_code == 404 and "--task NAME=nsp:DIR" in missing.text
    with TestClient(create_app(None, {"a": engines["fill"], "b": engines["fill"]})) as client:
        both = client.post("/fill-mask", json={"texts": [text]})
        assert both.status_code == 422 and "/predict/NAME" in both.text
    capsys.readouterr()

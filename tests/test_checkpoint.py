"""Model directories: round trips through transformers and bertkit, legacy files, bad files."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest
import torch
import transformers
from safetensors.torch import save_file

from bertkit import model as M
from bertkit.checkpoint import load_model, load_weights, read_state_dict, save_model
from bertkit.errors import BertkitError

TINY = dict(
    vocab_size=101,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
)


def randomised(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


IDS = torch.tensor([[2, 7, 9, 33, 3, 0], [2, 14, 15, 16, 17, 3]])
MASK = (IDS != 0).long()


@pytest.mark.parametrize(
    "ours_cls,hf_cls,kwargs,field",
    [
        (M.BertModel, transformers.BertModel, {}, "last_hidden_state"),
        (M.BertForPreTraining, transformers.BertForPreTraining, {}, "prediction_logits"),
        (M.BertForSequenceClassification, transformers.BertForSequenceClassification, {"num_labels": 3}, "logits"),
        (M.BertForTokenClassification, transformers.BertForTokenClassification, {"num_labels": 4}, "logits"),
        (M.BertForQuestionAnswering, transformers.BertForQuestionAnswering, {}, "start_logits"),
    ],
)
def test_save_then_load_with_transformers_and_bertkit(tmp_path, ours_cls, hf_cls, kwargs, field):
    ours = randomised(ours_cls(M.BertConfig(**TINY), **kwargs))
    save_model(ours, tmp_path)
    theirs, info = hf_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    back = load_model(tmp_path, ours_cls, **kwargs)
    with torch.no_grad():
        mine = ours(IDS, MASK)
        mine = mine[0] if isinstance(mine, tuple) else mine
        hf_out = getattr(theirs.eval()(input_ids=IDS, attention_mask=MASK), field)
        again = back(IDS, MASK)
        again = again[0] if isinstance(again, tuple) else again
    assert (mine - hf_out).abs().max().item() <= 1e-5
    assert torch.equal(mine, again)


def test_transformers_directory_loads_into_bertkit(tmp_path):
    hf = randomised(transformers.BertForSequenceClassification(transformers.BertConfig(**TINY, num_labels=2)))
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path, M.BertForSequenceClassification, num_labels=2)
    with torch.no_grad():
        assert (ours(IDS, MASK) - hf(input_ids=IDS, attention_mask=MASK).logits).abs().max() <= 1e-5


def test_legacy_pytorch_bin_with_gamma_beta_names(tmp_path):
    hf = randomised(transformers.BertModel(transformers.BertConfig(**TINY)))
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in hf.state_dict().items()
    }
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    ours = load_model(tmp_path)
    with torch.no_grad():
        diff = ours(IDS, MASK).last_hidden_state - hf(input_ids=IDS, attention_mask=MASK).last_hidden_state
    assert diff.abs().max() <= 1e-5


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Exploit()}, f)
    with pytest.raises(BertkitError, match="never unpickles arbitrary objects"):
        read_state_dict(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_corrupt_safetensors_names_the_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(BertkitError, match=r"model\.safetensors is not a readable safetensors file"):
        read_state_dict(tmp_path)


def test_missing_files_say_how_to_fetch(tmp_path):
    with pytest.raises(BertkitError, match="config.json.*bertkit fetch minilm"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(BertkitError, match="no weights in .*model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(BertkitError, match="not valid JSON"):
        load_model(tmp_path)


def test_unknown_config_key_in_directory(tmp_path):
    save_model(M.BertModel(M.BertConfig(**TINY)), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_hiden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertkitError, match="did you mean `num_hidden_layers`"):
        load_model(tmp_path)


def test_fresh_head_is_reported_and_missing_encoder_weight_is_an_error(tmp_path, caplog):
    encoder = randomised(M.BertModel(M.BertConfig(**TINY)))
    save_model(encoder, tmp_path)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        model = load_model(tmp_path, M.BertForSequenceClassification, num_labels=2)
    assert "newly initialised" in caplog.text and "classifier.weight" in caplog.text
    assert torch.equal(model.bert.layers[1].ffn.up.weight, encoder.layers[1].ffn.up.weight)

    state = read_state_dict(tmp_path)
    del state["encoder.layer.1.output.dense.weight"]
    with pytest.raises(BertkitError, match=r"lacks 1 encoder weight.*layers\.1\.ffn\.down\.weight"):
        load_weights(M.BertModel(M.BertConfig(**TINY)), state)


def test_unused_tensors_are_reported(tmp_path):
    save_model(randomised(M.BertForPreTraining(M.BertConfig(**TINY))), tmp_path)
    report = load_weights(M.BertModel(M.BertConfig(**TINY)), read_state_dict(tmp_path))
    assert report.newly_initialised == []
    assert "mlm.bias" in report.unused and "nsp.weight" in report.unused


def test_vocab_size_mismatch_between_config_and_weights(tmp_path):
    save_model(M.BertModel(M.BertConfig(**TINY)), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vocab_size"] = 120
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertkitError, match=r"shape \[101, 32\] but the config gives \[120, 32\]"):
        load_model(tmp_path)


def test_sharded_safetensors(tmp_path):
    hf = randomised(transformers.BertModel(transformers.BertConfig(**TINY)))
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / file), metadata={"format": "pt"})
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with torch.no_grad():
        a = load_model(tmp_path)(IDS, MASK).last_hidden_state
        b = hf(input_ids=IDS, attention_mask=MASK).last_hidden_state
    assert (a - b).abs().max() <= 1e-5


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_model(M.BertModel(M.BertConfig(**TINY)), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]

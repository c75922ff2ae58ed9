"""The model against Hugging Face transformers, on random tiny weights copied across (fp32, <= 1e-5)."""

from __future__ import annotations

import pytest
import torch
import transformers

from bertkit import model as M
from bertkit.checkpoint import load_weights
from bertkit.errors import BertkitError

TINY = dict(
    vocab_size=101,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    type_vocab_size=2,
)

# (bertkit head, Hugging Face head, constructor arguments)
HEADS = [
    (M.BertModel, transformers.BertModel, {}),
    (M.BertForPreTraining, transformers.BertForPreTraining, {}),
    (M.BertForMaskedLM, transformers.BertForMaskedLM, {}),
    (M.BertForSequenceClassification, transformers.BertForSequenceClassification, {"num_labels": 3}),
    (M.BertForSequenceClassification, transformers.BertForSequenceClassification, {"num_labels": 1}),
    (M.BertForTokenClassification, transformers.BertForTokenClassification, {"num_labels": 5}),
    (M.BertForQuestionAnswering, transformers.BertForQuestionAnswering, {}),
]


def hf_pair(ours_cls, hf_cls, kwargs, **config):
    """A Hugging Face model with every parameter randomised (biases and LayerNorms too), copied into ours."""
    torch.manual_seed(0)
    cfg = {**TINY, **config}
    hf_config = transformers.BertConfig(**cfg, **kwargs)
    hf = hf_cls(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    ours = ours_cls(M.BertConfig(**cfg), **kwargs).eval()
    report = load_weights(ours, hf.state_dict())
    return hf, ours, report


def batch(seed=1, B=4, T=17, vocab=101):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 9:] = 0  # padded rows
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 7:] = 1
    types[mask == 0] = 0
    return ids, mask, types


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def hf_outputs(hf, ids, mask, types):
    out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
    names = [
        "last_hidden_state",
        "pooler_output",
        "prediction_logits",
        "seq_relationship_logits",
        "logits",
        "start_logits",
        "end_logits",
    ]
    return [getattr(out, n) for n in names if getattr(out, n, None) is not None]


@pytest.mark.parametrize("ours_cls,hf_cls,kwargs", HEADS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_head_matches_transformers(ours_cls, hf_cls, kwargs):
    hf, ours, report = hf_pair(ours_cls, hf_cls, kwargs)
    assert report.newly_initialised == [] and report.unused == []
    ids, mask, types = batch()
    with torch.no_grad():
        expected = hf_outputs(hf, ids, mask, types)
        got = [t for t in as_tuple(ours(ids, mask, types)) if t is not None]
    if isinstance(got[0], torch.Tensor) and ours_cls is M.BertModel:
        got = [got[0], got[1]]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_activations_and_hidden_states_match(act):
    hf, ours, _ = hf_pair(M.BertModel, transformers.BertModel, {}, hidden_act=act)
    ids, mask, types = batch(seed=2)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        mine = ours(ids, mask, types, output_hidden_states=True)
    assert len(mine.hidden_states) == len(theirs.hidden_states) == TINY["num_hidden_layers"] + 1
    for a, b in zip(mine.hidden_states, theirs.hidden_states):
        assert (a - b).abs().max().item() <= 1e-5


def test_no_mask_equals_all_ones_mask():
    _, ours, _ = hf_pair(M.BertModel, transformers.BertModel, {})
    ids = torch.randint(1, 101, (2, 9))
    with torch.no_grad():
        a = ours(ids).last_hidden_state
        b = ours(ids, torch.ones_like(ids)).last_hidden_state
    assert torch.equal(a, b)


def test_padding_does_not_change_real_tokens():
    _, ours, _ = hf_pair(M.BertModel, transformers.BertModel, {})
    ids = torch.randint(1, 101, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = (padded != 0).long()
    with torch.no_grad():
        a = ours(ids).last_hidden_state
        b = ours(padded, mask).last_hidden_state[:, :6]
    assert (a - b).abs().max().item() <= 1e-5


def test_training_attention_with_dropout():
    """The written-out training attention: with p -> 0 it is SDPA's result (padding masked, bool or additive
    mask); with p = 0.1 it drops 10% of the weights, scales the rest by 1/0.9 and keeps the mean."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 4, generator=g) for _ in range(3))
    keep = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    keep[0, ..., 5:] = False
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    additive = (~keep).float() * torch.finfo(torch.float32).min
    for mask in (keep, additive):
        torch.testing.assert_close(M.cpu_attention_with_dropout(q, k, v, mask, 1e-12), sdpa, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    eye = torch.eye(64).expand(200, 1, 64, 64)  # value rows pick out the attention weights themselves
    weights = M.cpu_attention_with_dropout(torch.zeros(200, 1, 64, 8), torch.zeros(200, 1, 64, 8), eye, None, 0.1)
    kept = weights > 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    torch.testing.assert_close(weights[kept], torch.full_like(weights[kept], 1 / 64 / 0.9))
    assert abs(weights.sum(-1).mean().item() - 1.0) < 0.005  # the expectation is unchanged


def test_masked_positions_gather_the_same_logits():
    _, ours, _ = hf_pair(M.BertForPreTraining, transformers.BertForPreTraining, {})
    ids, mask, types = batch(seed=3)
    positions = torch.tensor([[1, 5, 2], [0, 3, 8], [6, 6, 1], [2, 3, 1]])
    with torch.no_grad():
        full, nsp_full = ours(ids, mask, types)
        picked, nsp = ours(ids, mask, types, masked_positions=positions)
    assert torch.allclose(picked, full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1])))
    assert torch.equal(nsp, nsp_full)


def test_mlm_decoder_is_tied_to_word_embeddings():
    model = M.BertForPreTraining(M.BertConfig(**TINY))
    assert model.mlm.word_embeddings[0].weight is model.bert.embeddings.word.weight
    assert not any("decoder" in k for k in model.state_dict())


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    model = M.BertModel(M.BertConfig.preset("mini", vocab_size=5000))
    w = model.layers[0].ffn.up.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.count_nonzero(model.layers[0].ffn.up.bias) == 0
    assert torch.equal(model.layers[0].attn_norm.weight, torch.ones(256))
    assert torch.count_nonzero(model.embeddings.word.weight[0]) == 0  # the [PAD] row


@pytest.mark.parametrize(
    "name,layers,hidden,heads",
    [
        ("tiny", 2, 128, 2),
        ("mini", 4, 256, 4),
        ("small", 4, 512, 8),
        ("medium", 8, 512, 8),
        ("base", 12, 768, 12),
        ("large", 24, 1024, 16),
    ],
)
def test_presets(name, layers, hidden, heads):
    c = M.BertConfig.preset(name)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (
        layers,
        hidden,
        heads,
        4 * hidden,
    )


def test_base_has_the_papers_parameter_count():
    # BERT-base: 110M parameters (109,482,240 with the pooler, vocab 30522)
    assert M.count_parameters(M.BertModel(M.BertConfig.preset("base"))) == 109_482_240


def test_config_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(BertkitError, match="unknown config key `hiden_size`.*did you mean `hidden_size`"):
        M.BertConfig.from_dict({"hiden_size": 64}, source="config.json")


def test_config_accepts_huggingface_metadata_and_rejects_other_positions():
    c = M.BertConfig.from_dict(
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "transformers_version": "4.8.2",
            "hidden_size": 64,
            "num_attention_heads": 4,
            "position_embedding_type": "absolute",
        }
    )
    assert c.hidden_size == 64
    with pytest.raises(BertkitError, match="relative_key"):
        M.BertConfig.from_dict({"position_embedding_type": "relative_key"})


def test_config_errors():
    with pytest.raises(BertkitError, match="gelu_new"):
        M.BertConfig(hidden_act="gelu_neww")
    with pytest.raises(BertkitError, match="multiple of num_attention_heads"):
        M.BertConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(BertkitError, match="did you mean `base`"):
        M.BertConfig.preset("bsae")


def test_too_long_input_is_a_clear_error():
    model = M.BertModel(M.BertConfig(**TINY))
    with pytest.raises(BertkitError, match="max_position_embeddings"):
        model(torch.ones(1, 41, dtype=torch.long))

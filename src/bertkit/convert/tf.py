"""Google's TensorFlow BERT variable names <-> Hugging Face names: a key table and pure functions over
`name -> numpy array` dicts, plus a reference forward pass that runs straight on TensorFlow-named
arrays (kernels [in, out], as google-research/bert's modeling.py multiplies them) to check a
conversion without trusting the key table it checks. File I/O lives in `convert.bundle`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.convert.hf import split_prefix

# (Hugging Face, TensorFlow, kind). {i}: layer index. kind `dense`: weight <-> kernel, transposed
# ([out, in] in PyTorch, [in, out] in TF); `norm`: weight/bias <-> gamma/beta; `plain`: one tensor.
TF_KEYS = [
    ("bert.embeddings.word_embeddings.weight", "bert/embeddings/word_embeddings", "plain"),
    ("bert.embeddings.position_embeddings.weight", "bert/embeddings/position_embeddings", "plain"),
    ("bert.embeddings.token_type_embeddings.weight", "bert/embeddings/token_type_embeddings", "plain"),
    ("bert.embeddings.LayerNorm", "bert/embeddings/LayerNorm", "norm"),
    *[
        (f"bert.encoder.layer.{{i}}.attention.self.{part}", f"bert/encoder/layer_{{i}}/attention/self/{part}", "dense")
        for part in ("query", "key", "value")
    ],
    ("bert.encoder.layer.{i}.attention.output.dense", "bert/encoder/layer_{i}/attention/output/dense", "dense"),
    ("bert.encoder.layer.{i}.attention.output.LayerNorm", "bert/encoder/layer_{i}/attention/output/LayerNorm", "norm"),
    ("bert.encoder.layer.{i}.intermediate.dense", "bert/encoder/layer_{i}/intermediate/dense", "dense"),
    ("bert.encoder.layer.{i}.output.dense", "bert/encoder/layer_{i}/output/dense", "dense"),
    ("bert.encoder.layer.{i}.output.LayerNorm", "bert/encoder/layer_{i}/output/LayerNorm", "norm"),
    ("bert.pooler.dense", "bert/pooler/dense", "dense"),
    # run_pretraining.py's heads; the MLM decoder is tied to the word embeddings in both layouts.
    ("cls.predictions.transform.dense", "cls/predictions/transform/dense", "dense"),
    ("cls.predictions.transform.LayerNorm", "cls/predictions/transform/LayerNorm", "norm"),
    ("cls.predictions.bias", "cls/predictions/output_bias", "plain"),
    # Output layers created with tf.get_variable([num_outputs, hidden]): already PyTorch's [out, in].
    ("cls.seq_relationship.weight", "cls/seq_relationship/output_weights", "plain"),
    ("cls.seq_relationship.bias", "cls/seq_relationship/output_bias", "plain"),
    ("classifier.weight", "output_weights", "plain"),  # run_classifier.py
    ("classifier.bias", "output_bias", "plain"),
    ("qa_outputs.weight", "cls/squad/output_weights", "plain"),  # run_squad.py
    ("qa_outputs.bias", "cls/squad/output_bias", "plain"),
]
SUFFIXES = {"dense": (("weight", "kernel"), ("bias", "bias")), "norm": (("weight", "gamma"), ("bias", "beta"))}
# Training state in google-research/bert checkpoints (AdamWeightDecayOptimizer's slots, the step
# counter) and in other TF optimizers: not model weights, skipped on purpose.
TF_TRAINING_STATE = re.compile(
    r"(^|/)(adam_[mv]|Adam(_1)?|Momentum|lamb_[mv]|global_step|beta[12]_power"
    r"|loss_scale|good_steps)(/|$)"
)
HF_SKIPPED = {"embeddings.position_ids", "cls.predictions.decoder.weight"}
HF_ALIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")


def _table() -> list[tuple[re.Pattern, str, re.Pattern, str, bool]]:
    """Expand TF_KEYS to (hf regex, hf template, tf regex, tf template, transpose) per tensor."""
    rows = []
    for hf, tf, kind in TF_KEYS:
        pairs = (
            [("", "", False)]
            if kind == "plain"
            else [("." + a, "/" + b, kind == "dense" and a == "weight") for a, b in SUFFIXES[kind]]
        )
        for hf_suffix, tf_suffix, transpose in pairs:
            h, t = hf + hf_suffix, tf + tf_suffix
            rows.append(
                (
                    re.compile(re.escape(h).replace(r"\{i\}", r"(?P<i>\d+)") + "$"),
                    h,
                    re.compile(re.escape(t).replace(r"\{i\}", r"(?P<i>\d+)") + "$"),
                    t,
                    transpose,
                )
            )
    return rows


ROWS = _table()


def from_tf(tf_state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """TensorFlow names -> Hugging Face names. Returns (converted, skipped training state, unknown)."""
    out, skipped, unknown = {}, [], []
    for name, array in tf_state.items():
        if TF_TRAINING_STATE.search(name):
            skipped.append(name)
            continue
        for _, hf, tf_pattern, _, transpose in ROWS:
            match = tf_pattern.match(name)
            if match:
                out[hf.format(**match.groupdict())] = np.ascontiguousarray(array.T if transpose else array)
                break
        else:
            unknown.append(name)
    return out, skipped, unknown


def to_tf(hf_state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Hugging Face names (with or without the `bert.` prefix) -> TensorFlow names.
    Returns (converted, names with no place in Google's layout, e.g. bertkit's CRF)."""
    out, unknown = {}, []
    for name, array in hf_state.items():
        name = HF_ALIASES.get(name, name)
        bare = split_prefix(name)[1]
        if bare in HF_SKIPPED:
            continue
        if bare.startswith(ENCODER_PREFIXES):
            name = "bert." + bare
        for hf_pattern, _, _, tf, transpose in ROWS:
            match = hf_pattern.match(name)
            if match:
                out[tf.format(**match.groupdict())] = np.ascontiguousarray(array.T if transpose else array)
                break
        else:
            unknown.append(name)
    return out, unknown


def reference_forward(
    tf_state: dict[str, np.ndarray],
    config,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """BERT's encoder and pooler in float64, read directly from TensorFlow-named arrays, written after
    google-research/bert's modeling.py (`transformer_model`) rather than after bertkit's model.
    Returns (sequence output [B, T, H], pooled output [B, H])."""

    def w(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(tf_state[name], dtype=np.float64))

    def dense(x, scope):  # x [..., in] @ kernel [in, out]
        return x @ w(f"{scope}/kernel") + w(f"{scope}/bias")

    def norm(x, scope):
        return F.layer_norm(x, x.shape[-1:], w(f"{scope}/gamma"), w(f"{scope}/beta"), config.layer_norm_eps)

    acts: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "gelu": F.gelu,
        "relu": F.relu,
        "gelu_new": lambda t: F.gelu(t, approximate="tanh"),
    }
    act = acts[config.hidden_act]
    B, T = input_ids.shape
    N, H = config.num_attention_heads, config.hidden_size
    x = (
        w("bert/embeddings/word_embeddings")[input_ids]
        + w("bert/embeddings/token_type_embeddings")[token_type_ids]
        + w("bert/embeddings/position_embeddings")[:T]
    )
    x = norm(x, "bert/embeddings/LayerNorm")
    adder = (1.0 - attention_mask.double())[:, None, None, :] * -10000.0  # [B, 1, 1, T], as modeling.py
    for i in range(config.num_hidden_layers):
        scope = f"bert/encoder/layer_{i}"
        q, k, v = (
            dense(x, f"{scope}/attention/self/{p}").view(B, T, N, H // N).transpose(1, 2)
            for p in ("query", "key", "value")
        )  # [B, N, T, H/N]
        scores = q @ k.transpose(-1, -2) / (H // N) ** 0.5 + adder  # [B, N, F, T]
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H)
        x = norm(dense(context, f"{scope}/attention/output/dense") + x, f"{scope}/attention/output/LayerNorm")
        h = dense(act(dense(x, f"{scope}/intermediate/dense")), f"{scope}/output/dense")
        x = norm(h + x, f"{scope}/output/LayerNorm")
    pooled = torch.tanh(dense(x[:, 0], "bert/pooler/dense")) if "bert/pooler/dense/kernel" in tf_state else None
    return x, pooled

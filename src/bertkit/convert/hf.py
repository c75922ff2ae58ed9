"""Hugging Face <-> bertkit parameter names: a key table and two pure functions over `name -> tensor`.

bertkit fuses query, key and value into one `attn.qkv` projection; Hugging Face keeps three. Every
other parameter is a plain rename. Encoder names may carry a `bert.` prefix (head models) or not
(a bare BertModel, e.g. MiniLM); the prefix is kept as found. File I/O lives in `bertkit.checkpoint`.
"""

from __future__ import annotations

import re

import torch

# (bertkit, Hugging Face) name templates; {i} is a layer index, {p} is `weight` or `bias`.
ENCODER_KEYS = [
    ("embeddings.word.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight"),
    ("embeddings.norm.{p}", "embeddings.LayerNorm.{p}"),
    ("layers.{i}.attn.out.{p}", "encoder.layer.{i}.attention.output.dense.{p}"),
    ("layers.{i}.attn_norm.{p}", "encoder.layer.{i}.attention.output.LayerNorm.{p}"),
    ("layers.{i}.ffn.up.{p}", "encoder.layer.{i}.intermediate.dense.{p}"),
    ("layers.{i}.ffn.down.{p}", "encoder.layer.{i}.output.dense.{p}"),
    ("layers.{i}.ffn_norm.{p}", "encoder.layer.{i}.output.LayerNorm.{p}"),
    ("pooler.dense.{p}", "pooler.dense.{p}"),
]
HEAD_KEYS = [
    ("mlm.dense.{p}", "cls.predictions.transform.dense.{p}"),
    ("mlm.norm.{p}", "cls.predictions.transform.LayerNorm.{p}"),
    ("mlm.bias", "cls.predictions.bias"),
    ("nsp.{p}", "cls.seq_relationship.{p}"),
    ("classifier.{p}", "classifier.{p}"),
    ("qa.{p}", "qa_outputs.{p}"),
    # bertkit's CRF head (NER); transformers has none and reports these as unexpected keys.
    ("crf.start", "crf.start"),
    ("crf.end", "crf.end"),
    ("crf.transitions", "crf.transitions"),
]
# One bertkit tensor = three Hugging Face tensors concatenated along dim 0 ([3H, H] and [3H]).
FUSED_QKV = (
    "layers.{i}.attn.qkv.{p}",
    [f"encoder.layer.{{i}}.attention.self.{part}.{{p}}" for part in ("query", "key", "value")],
)

# Hugging Face names that hold no parameters of their own: a buffer and the tied MLM decoder.
HF_SKIPPED = {"embeddings.position_ids", "cls.predictions.decoder.weight"}
HF_ALIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
# Pre-2019 PyTorch ports of BERT named LayerNorm parameters after TensorFlow's gamma/beta.
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


def _pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(body + "$")


def _rename(name: str, table: list[tuple[str, str]], reverse: bool) -> str | None:
    for ours, theirs in table:
        src, dst = (ours, theirs) if reverse else (theirs, ours)
        match = _pattern(src).match(name)
        if match:
            return dst.format(**match.groupdict())
    return None


def split_prefix(name: str) -> tuple[str, str]:
    """("bert.", rest) for a name under a head's encoder, else ("", name)."""
    return ("bert.", name[5:]) if name.startswith("bert.") else ("", name)


def from_hf(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Hugging Face names -> bertkit names. Returns (converted, names that matched nothing)."""
    out: dict = {}
    unknown: list[str] = []
    qkv_parts: dict = {}
    for name, tensor in state.items():
        for old, new in LEGACY_SUFFIXES.items():
            if name.endswith(old) and "LayerNorm" in name:
                name = name[: -len(old)] + new
        name = HF_ALIASES.get(name, name)
        prefix, rest = split_prefix(name)
        if rest in HF_SKIPPED or name in HF_SKIPPED:
            continue
        qkv = re.match(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$", rest)
        if qkv:
            layer, part, p = qkv.groups()
            qkv_parts.setdefault((prefix, layer, p), {})[part] = tensor
            continue
        ours = _rename(rest, ENCODER_KEYS, reverse=False)
        if ours is not None:
            out[prefix + ours] = tensor
            continue
        ours = _rename(name, HEAD_KEYS, reverse=False)
        if ours is not None:
            out[ours] = tensor
        else:
            unknown.append(name)
    for (prefix, layer, p), parts in qkv_parts.items():
        missing = [k for k in ("query", "key", "value") if k not in parts]
        if missing:  # leave the gap to be reported as a missing bertkit parameter
            unknown += [f"{prefix}encoder.layer.{layer}.attention.self.{k}.{p}" for k in parts]
            continue
        fused = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
        out[f"{prefix}layers.{layer}.attn.qkv.{p}"] = fused
    return out, unknown


def to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """bertkit names -> Hugging Face names (the tied MLM decoder weight is not written, as HF does)."""
    out = {}
    for name, tensor in state.items():
        prefix, rest = split_prefix(name)
        qkv = _pattern(FUSED_QKV[0]).match(rest)
        if qkv:
            for template, part in zip(FUSED_QKV[1], tensor.chunk(3, dim=0)):
                out[prefix + template.format(**qkv.groupdict())] = part.contiguous()
            continue
        theirs = _rename(rest, ENCODER_KEYS, reverse=True)
        if theirs is not None:
            out[prefix + theirs] = tensor
            continue
        theirs = _rename(name, HEAD_KEYS, reverse=True)
        if theirs is None:
            raise KeyError(f"no Hugging Face name for bertkit parameter `{name}`")  # a bug, not user input
        out[theirs] = tensor
    return out

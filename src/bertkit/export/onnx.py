"""BERT and its task heads as ONNX graphs, run by onnxruntime, and checked against PyTorch.

Every graph takes the same three inputs, each [B, T] int64 with both axes dynamic:
    input_ids, attention_mask (1 = token, 0 = padding), token_type_ids
and returns the head's tensors (see OUTPUTS). Decoding (softmax, CRF Viterbi, QA spans) stays in
Python, in the tasks, so `bertkit.onnx_model.OnnxModel` runs them in place of the torch model.

The mask: in PyTorch, `bertkit.model.attention_bias` skips it when nothing is padded (SDPA's fast
path) and passes a boolean mask otherwise. Tracing records one branch only, so while tracing it
always gives an additive float mask (0 or float32's minimum): the graph applies it to every batch,
padded or not, with one Add a layer. A boolean mask would export as Where and IsNaN guards in every
layer, which cost the int8 graph about 15% of its throughput. The example batch is padded all the
same, and `parity` checks padded and unpadded batches after every export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.model import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertOutput,
    config_of,
)
from bertkit.onnx_model import INPUTS, OnnxModel

# head class -> names of its outputs, each [B, T, ...] except those `per_sequence` names.
OUTPUTS = {
    BertModel: ("last_hidden_state", "pooler_output"),
    BertForSequenceClassification: ("logits",),
    BertForTokenClassification: ("logits",),  # emissions; a CRF on top is decoded in Python
    BertForQuestionAnswering: ("start_logits", "end_logits"),
}


class _Graph(nn.Module):
    """What gets traced: (input_ids, attention_mask, token_type_ids) -> a flat tuple of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        if isinstance(out, BertOutput):
            return (out.last_hidden_state,) + ((out.pooler_output,) if out.pooler_output is not None else ())
        return out if isinstance(out, tuple) else (out,)


def output_names(model: nn.Module) -> tuple[str, ...]:
    names = OUTPUTS.get(type(model))
    if names is None:
        raise BertkitError(
            f"cannot export a {type(model).__name__} to ONNX: export the base model or a "
            f"classify, ner or qa head ({', '.join(c.__name__ for c in OUTPUTS)})"
        )
    if isinstance(model, BertModel) and model.pooler is None:
        names = names[:1]
    return names


def _example(pad_id: int, vocab_size: int) -> tuple[torch.Tensor, ...]:
    """A padded [2, 8] batch (see the module docstring for why it must be padded)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab_size - 1), vocab_size, (2, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = pad_id
    return ids, mask, torch.zeros_like(ids)


def export_onnx(model: nn.Module, path: str | Path, pad_id: int = 0, opset: int = 17) -> tuple[str, ...]:
    """Write `model` (BertModel or a head, eval mode) as an ONNX graph with dynamic batch and sequence."""
    names = output_names(model)
    config = config_of(model)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    whole = per_sequence(model)
    dynamic.update({name: {0: "batch"} if name in whole else {0: "batch", 1: "sequence"} for name in names})
    graph = _Graph(model).eval()
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is legacy and that Python branches are frozen; the
        # only data-dependent branch (the mask) is handled by the padded example.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            graph,
            _example(pad_id, config.vocab_size),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUTS),
            output_names=list(names),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    return names


def flat_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, BertOutput):
        return [t for t in (out.last_hidden_state, out.pooler_output) if t is not None]
    return list(out) if isinstance(out, tuple) else [out]


def per_sequence(model: nn.Module) -> set[str]:
    """Outputs of `model` that are [B, ...] (one per sequence) rather than [B, T, ...]."""
    return {"logits"} if isinstance(model, BertForSequenceClassification) else {"pooler_output"}


@torch.inference_mode()
def parity(model: nn.Module, onnx_model: OnnxModel, batches: list[tuple[torch.Tensor, ...]]) -> dict:
    """max |torch - onnx| over real tokens, and the worst cosine between a row's outputs (the real
    tokens of all outputs, flattened), over `batches` of (input_ids, attention_mask, token_type_ids)."""
    names, whole = output_names(model), per_sequence(model)
    worst_diff, worst_cos = 0.0, 1.0
    for ids, mask, types in batches:
        ours, theirs = flat_outputs(model(ids, mask, types)), flat_outputs(onnx_model(ids, mask, types))
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            a, b = (
                torch.cat(
                    [(t[row] if name in whole else t[row][real]).flatten().float() for name, t in zip(names, outs)]
                )
                for outs in (ours, theirs)
            )
            worst_diff = max(worst_diff, float((a - b).abs().max()))
            worst_cos = min(worst_cos, float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    return {"max_abs_diff": worst_diff, "worst_cosine": worst_cos}

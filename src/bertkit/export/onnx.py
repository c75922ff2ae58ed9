"""BERT and its task heads as ONNX graphs, run by onnxruntime, and checked against PyTorch.

Every graph takes the same three inputs, each [B, T] int64 with both axes dynamic:
    input_ids, attention_mask (1 = token, 0 = padding), token_type_ids
and returns the head's tensors (see OUTPUTS). Decoding (softmax, CRF Viterbi, QA spans) stays in
Python, in the tasks, so `OnnxModel` is a drop-in for the torch model in `predict` and `Encoder`.

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

import numpy as np
import torch
from torch import nn

from bertkit.errors import BertkitError
from bertkit.model import (BertForQuestionAnswering, BertForSequenceClassification,
                           BertForTokenClassification, BertModel, BertOutput)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")

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
        raise BertkitError(f"cannot export a {type(model).__name__} to ONNX: export the base model or a "
                           f"classify, ner or qa head ({', '.join(c.__name__ for c in OUTPUTS)})")
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
    config = model.config if isinstance(model, BertModel) else model.bert.config
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    whole = per_sequence(model)
    dynamic.update({name: {0: "batch"} if name in whole else {0: "batch", 1: "sequence"} for name in names})
    graph = _Graph(model).eval()
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is legacy and that Python branches are frozen; the
        # only data-dependent branch (the mask) is handled by the padded example.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(graph, _example(pad_id, config.vocab_size), str(path), dynamo=False,
                          opset_version=opset, input_names=list(INPUTS), output_names=list(names),
                          dynamic_axes=dynamic, do_constant_folding=True)
    return names


class OnnxModel:
    """An ONNX graph called like the torch model: torch tensors in, the same output structure out.

    The base model gives a BertOutput (no hidden_states), classify and ner heads a logits tensor, qa a
    (start, end) pair. `crf` may be set for a NER head with a CRF (decoding reads its parameters).
    """

    def __init__(self, path: str | Path, config=None, threads: int | None = None, spin: bool = True):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BertkitError(f"{path} not found: export the model first with "
                               f"`bertkit export --model DIR --format onnx --output {path.parent}`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # onnxruntime's threads spin between operators instead of sleeping: 15-25% more throughput for
        # a BERT graph of ~300 small operators on 2 cores (bench/speed.py). Spinning threads starve
        # PyTorch when both compute in turns in one process, so the parity checks pass spin=False.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = tuple(o.name for o in self.session.get_outputs())
        self.path, self.config, self.training = path, config, False
        self.crf = None

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        if output_hidden_states:
            raise BertkitError(f"{self.path} holds the last layer only: use --layer -1 with the onnx "
                               "backend, or --backend torch for other layers")
        limit = self.config.max_position_embeddings if self.config is not None else None
        if limit is not None and input_ids.shape[1] > limit:  # the traced graph lost torch's check
            raise BertkitError(f"sequence of {input_ids.shape[1]} tokens is longer than the model's "
                               f"max_position_embeddings ({limit}): lower max_length")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {name: t.detach().cpu().numpy().astype(np.int64, copy=False)
                for name, t in zip(INPUTS, (input_ids, attention_mask, token_type_ids))}
        outs = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        if self.names[0] == "last_hidden_state":
            return BertOutput(outs[0], outs[1] if len(outs) > 1 else None, None)
        return outs[0] if len(outs) == 1 else tuple(outs)

    # The bits of nn.Module that `predict` and `Encoder` touch.
    def eval(self):
        return self

    def train(self, mode: bool = True):
        if mode:
            raise BertkitError("an ONNX model cannot be trained: fine-tune the PyTorch model instead")
        return self

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise BertkitError(f"the onnx backend runs on the CPU only, not `{device}`: pass --device cpu")
        return self

    def parameters(self):
        return iter([torch.zeros(())])  # callers ask it for the device: the CPU


def _flat(out) -> list[torch.Tensor]:
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
        ours, theirs = _flat(model(ids, mask, types)), _flat(onnx_model(ids, mask, types))
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            a, b = (torch.cat([(t[row] if name in whole else t[row][real]).flatten().float()
                               for name, t in zip(names, outs)]) for outs in (ours, theirs))
            worst_diff = max(worst_diff, float((a - b).abs().max()))
            worst_cos = min(worst_cos, float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    return {"max_abs_diff": worst_diff, "worst_cosine": worst_cos}

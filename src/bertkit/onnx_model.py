"""ONNX graphs written by `bertkit export`, run by onnxruntime and called like the torch model.

Every graph takes the same three inputs, each [B, T] int64 with both axes dynamic:
    input_ids, attention_mask (1 = token, 0 = padding), token_type_ids
and returns the head's tensors; decoding (softmax, CRF Viterbi, QA spans) stays in the tasks, so an
`OnnxModel` runs wherever the torch model does in `bertkit.inference`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from bertkit.checkpoint import load_config
from bertkit.errors import BertkitError
from bertkit.model import BertOutput
from bertkit.tasks import get_task
from bertkit.tasks.crf import CRF

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxModel:
    """An ONNX graph called like the torch model: torch tensors in, the same output structure out.

    The base model gives a BertOutput (no hidden_states), classify and ner heads a logits tensor, qa a
    (start, end) pair. `crf` may be set for a NER head with a CRF (decoding reads its parameters).
    """

    def __init__(self, path: str | Path, config=None, threads: int | None = None, spin: bool = True):
        import onnxruntime as ort  # an optional dependency (the `onnx` extra): imported when a graph is run

        path = Path(path)
        if not path.is_file():
            raise BertkitError(
                f"{path} not found: export the model first with "
                f"`bertkit export --model DIR --format onnx --output {path.parent}`"
            )
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
        self.crf: CRF | None = None

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        if output_hidden_states:
            raise BertkitError(
                f"{self.path} holds the last layer only: use --layer -1 with the onnx "
                "backend, or --backend torch for other layers"
            )
        limit = self.config.max_position_embeddings if self.config is not None else None
        if limit is not None and input_ids.shape[1] > limit:  # the traced graph lost torch's check
            raise BertkitError(
                f"sequence of {input_ids.shape[1]} tokens is longer than the model's "
                f"max_position_embeddings ({limit}): lower max_length"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {
            name: t.detach().cpu().numpy().astype(np.int64, copy=False)
            for name, t in zip(INPUTS, (input_ids, attention_mask, token_type_ids))
        }
        outs = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        if self.names[0] == "last_hidden_state":
            return BertOutput(outs[0], outs[1] if len(outs) > 1 else None, None)
        return outs[0] if len(outs) == 1 else tuple(outs)

    # The bits of nn.Module that inference touches (the device is passed to it, never read off a model).
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


def load_onnx(model_dir: str | Path, int8: bool = False) -> OnnxModel:
    """The exported graph of a directory written by `bertkit export`, with config (and CRF) attached."""
    d = Path(model_dir)
    name = "model.int8.onnx" if int8 else "model.onnx"
    if not (d / name).is_file():
        flag = " --quantize int8" if int8 else ""
        raise BertkitError(
            f"{d} has no {name}: export it with `bertkit export --model MODEL --format onnx{flag} --output {d}`"
        )
    model = OnnxModel(d / name, load_config(d))
    if (d / "crf.safetensors").is_file():  # a NER head with a CRF: decoding reads its transition scores
        state = json.loads((d / "task.json").read_text())
        task = get_task("ner", labels=state["labels"], head="crf", scheme=state.get("scheme"))
        crf = CRF(task.label_set, task.state()["scheme"])
        crf.load_state_dict(load_file(str(d / "crf.safetensors")))
        model.crf = crf
    return model

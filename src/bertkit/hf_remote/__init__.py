"""Model directories that bring their own modeling code for transformers: the CRF NER head.

transformers has no CRF. A directory that called itself a BertForTokenClassification would load there
without the `crf.*` tensors and tag by argmax, silently and worse. So a CRF model's directory follows
the Hub's convention for custom heads: config.json names its own `model_type` ("bertkit-crf") and an
`auto_map` into `modeling_bertkit_crf.py`, a file written beside it. transformers then refuses the
directory without `trust_remote_code=True`, and with it decodes by the CRF's Viterbi (how: that
file's docstring). bertkit itself ignores these keys and the file, and reads the model as before.

Besides the learned `crf.start`, `crf.end` and `crf.transitions`, model.safetensors then holds what
the standalone file cannot compute without bertkit: which moves the tagging scheme allows
(`crf.start_mask`, `crf.transition_mask`, `crf.end_mask`) and, per vocabulary id, whether a piece
opens a word, continues one (`##`) or is special (`crf.piece_kind`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bertkit.outputs import atomic_write_text

MODEL_TYPE = "bertkit-crf"
MODELING_FILE = "modeling_bertkit_crf.py"
_SOURCE = Path(__file__).with_name(MODELING_FILE + ".txt")  # .txt: it imports transformers, not a bertkit module

# config.json keys written for transformers only; bertkit's loader drops them.
CONFIG_KEYS = ("auto_map",)
# Tensors written for the modeling file only; bertkit's loader drops them (the CRF rebuilds its masks
# from the labels and scheme in task.json).
TENSORS = ("crf.start_mask", "crf.transition_mask", "crf.end_mask", "crf.piece_kind")
SPECIAL, WORD_START, CONTINUATION = 0, 1, 2  # crf.piece_kind values, as in the modeling file
SPECIAL_PIECES = ("[CLS]", "[SEP]", "[PAD]")


def crf_config() -> dict:
    """config.json entries of a CRF model directory."""
    module = MODELING_FILE.removesuffix(".py")
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["BertkitCrfForTokenClassification"],
        "auto_map": {
            "AutoConfig": f"{module}.BertkitCrfConfig",
            "AutoModel": f"{module}.BertkitCrfModel",
            "AutoModelForTokenClassification": f"{module}.BertkitCrfForTokenClassification",
        },
    }


def crf_tensors(crf: nn.Module, vocab: dict[str, int]) -> dict[str, torch.Tensor]:
    """The masks of `crf` (a bertkit.tasks.crf.CRF) and each vocabulary id's piece kind [V]."""
    kind = torch.full((len(vocab),), WORD_START, dtype=torch.int8)
    for token, i in vocab.items():
        if token.startswith("##"):
            kind[i] = CONTINUATION
        elif token in SPECIAL_PIECES:
            kind[i] = SPECIAL
    masks = {name: getattr(crf, name.removeprefix("crf.")).detach().cpu() for name in TENSORS[:3]}
    return {**masks, "crf.piece_kind": kind}


def write_modeling_file(directory: Path) -> None:
    atomic_write_text(directory / MODELING_FILE, _SOURCE.read_text(encoding="utf-8"))

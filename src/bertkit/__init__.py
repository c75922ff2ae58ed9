"""bertkit: BERT end to end. Pretrain, fine-tune, evaluate, encode and serve.

    from bertkit import Encoder
    vectors = Encoder("minilm").encode(["A sentence.", "Another one."])

Names are imported lazily, so `bertkit fetch` starts without loading torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Encoder": "bertkit.encode",
    "BertTokenizer": "bertkit.tokenizer",
    "BertConfig": "bertkit.model",
    "BertModel": "bertkit.model",
    "BertForPreTraining": "bertkit.model",
    "BertForMaskedLM": "bertkit.model",
    "BertForSequenceClassification": "bertkit.model",
    "BertForTokenClassification": "bertkit.model",
    "BertForQuestionAnswering": "bertkit.model",
    "load_model": "bertkit.checkpoint",
    "save_model": "bertkit.checkpoint",
    "BertkitError": "bertkit.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")

"""Sentence embeddings as a trainable model: a BERT, pooling, and an optional projection.

`SentenceEmbedder` is the first modules of a sentence-transformers pipeline (Transformer -> Pooling
-> Dense) as one `nn.Module` the training loop can train; `EmbedTask` reads texts and turns them into
vectors. What the vectors are trained towards is the training job's: `bertkit distill --task embed`
matches a teacher's vectors (`bertkit.distill.EmbedDistillTask`). A trained model is saved as a
sentence-transformers directory, so `bertkit encode` and sentence-transformers read it alike.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.encode.encoder import pool
from bertkit.model import BertConfig, BertModel
from bertkit.tasks import Example, Feature, Task


class SentenceEmbedder(nn.Module):
    """input ids -> pooled (and, with `dim` other than the hidden size, linearly projected) vectors [B, dim]."""

    def __init__(self, config: BertConfig, pooling: str = "mean", dim: int | None = None):
        super().__init__()
        self.bert = BertModel(config)
        self.pooling = pooling
        self.dense = nn.Linear(config.hidden_size, dim) if dim and dim != config.hidden_size else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.bert(input_ids, attention_mask, token_type_ids)
        vectors = pool(out.last_hidden_state, attention_mask, self.pooling, out.pooler_output)
        return self.dense(vectors) if self.dense is not None else vectors


class EmbedTask(Task):
    """Texts -> sentence vectors (`{"vector": [...]}` per text), one input each, cut to max_length."""

    name = "embed"
    main_metric = "cosine"
    inputs = ("text",)
    optional_inputs = ()
    unused_parameters = True  # the pooler, when the pooling is not `pooler`

    def __init__(self, pooling: str = "mean", dim: int | None = None):
        self.pooling, self.dim = pooling, dim

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[Feature]:
        encodings = tokenizer.encode_batch([e["text"] for e in examples], max_length=None, truncation="do_not_truncate")
        features = []
        for i, enc in enumerate(encodings):
            ids = enc.ids if len(enc.ids) <= max_length else enc.ids[: max_length - 1] + [tokenizer.sep_id]
            features.append({"input_ids": ids, "token_type_ids": [0] * len(ids), "example": i})
        return features

    def build_model(self, config) -> nn.Module:
        return SentenceEmbedder(config, self.pooling, self.dim)

    def forward(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float().cpu()

    def decode(self, outputs, features, examples):
        vectors = torch.cat(outputs)
        out: list[dict] = [{} for _ in examples]
        for f, v in zip(features, vectors):
            out[f["example"]] = {"vector": v.tolist()}
        return out

    def state(self) -> dict:
        return {"task": self.name, "pooling": self.pooling, "dim": self.dim}

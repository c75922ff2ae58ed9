"""Sentence embeddings: a BERT, pooling and an optional projection, trained so that vectors compare well.

`SentenceEmbedder` is the first modules of a sentence-transformers pipeline (Transformer -> Pooling
-> Dense) as one `nn.Module` the training loop trains. `EmbedTask` (`bertkit finetune --task embed`)
trains it on one of two kinds of data, told apart by their columns (TSV/CSV with a header, or JSONL):

- pairs, `anchor`, `positive` and optionally `negative` (a hard negative): the multiple-negatives
  ranking loss (Henderson et al. 2017; sentence-transformers' MultipleNegativesRankingLoss): each
  anchor must pick its positive among every positive and negative of the batch, by cosine x 20
  (a positive that recurs in the batch is not a negative for the other anchors).
  Dev: each anchor retrieves from a corpus of every positive and negative of the dev file (and the
  texts of rows with an empty anchor, which only add to the corpus): recall@1, recall@10, MRR@10.
- scored pairs, `text`, `text_b` and `score`: CoSENT (Su 2022; sentence-transformers' CoSENTLoss):
  every pair scored higher must get a higher cosine, log(1 + sum exp(20 (cos_lo - cos_hi))).
  Dev: Spearman correlation between cosine and score.

The best model is saved as a sentence-transformers directory (the pooling and normalisation of the
model it started from, mean pooling for a plain BERT) with task.json, so `bertkit encode`,
`bertkit evaluate` and `SentenceTransformer(DIR)` all read it. `bertkit distill --task embed` trains
the same model towards a teacher's vectors (`bertkit.distill.EmbedDistillTask`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import sentence_files
from bertkit.data.collate import IGNORE
from bertkit.data.readers import read_records
from bertkit.encode.encoder import pool
from bertkit.errors import BertkitError
from bertkit.metrics import spearman
from bertkit.model import BertConfig, BertModel
from bertkit.tasks import Example, Feature, Task

SCALE = 20.0  # cosine -> logit, as sentence-transformers' defaults for both losses
KINDS = {"pairs": ("anchor", "positive"), "scored": ("text", "text_b", "score")}


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
    """Texts -> sentence vectors; trained on pairs or scored pairs (see the module docstring)."""

    name = "embed"
    main_metric = "mrr@10"
    inputs = ("text",)
    optional_inputs = ()
    unused_parameters = True  # the pooler, when the pooling is not `pooler`

    def __init__(self, pooling: str = "mean", dim: int | None = None, kind: str | None = None):
        self.pooling, self.dim, self.kind = pooling, dim, kind
        if kind == "scored":
            self.main_metric = "spearman"

    # --- data -------------------------------------------------------------------------------------
    def read(self, path: str) -> list[Example]:
        examples = []
        for number, record in read_records(path):
            kind = "scored" if "score" in record else "pairs" if "positive" in record else None
            if kind is None:
                raise BertkitError(
                    f"{path}, line {number}: fields {', '.join(record)}; embedding data is pairs (`anchor`, "
                    "`positive`, optional `negative`) or scored pairs (`text`, `text_b`, `score`)"
                )
            examples.append(self._example(record, kind, path, number))
        if not examples:
            raise BertkitError(f"{path} holds no examples: expected a header row and one pair a line")
        kinds = {e["kind"] for e in examples}
        if len(kinds) > 1:
            raise BertkitError(f"{path} mixes pairs and scored pairs: keep one kind of data in a file")
        return examples

    @staticmethod
    def _example(record: dict, kind: str, path: str, number: int) -> Example:
        def text(key: str, required: bool = True) -> str | None:
            value = record.get(key)
            if value is None or str(value).strip() == "":
                if required:
                    raise BertkitError(f"{path}, line {number}: `{key}` is empty; every {kind} row needs one")
                return None
            return str(value)

        if kind == "scored":
            try:
                score = float(record["score"])
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise BertkitError(f"{path}, line {number}: score {record['score']!r} is not a finite number")
            return {
                "kind": kind,
                "text": text("text"),
                "text_b": text("text_b"),
                "negative": None,
                "score": score,
                "line": number,
                "source": str(path),
            }
        return {
            "kind": kind,
            "text": text("anchor", required=False),
            "text_b": text("positive"),
            "negative": text("negative", required=False),
            "score": None,
            "line": number,
            "source": str(path),
        }

    def example(self, record: dict, number: int, source: str = "input") -> Example:
        return {
            "kind": None,
            "text": record["text"],
            "text_b": None,
            "negative": None,
            "score": None,
            "line": number,
            "source": source,
        }

    def fit(self, train: list[Example]) -> None:
        self.kind = train[0]["kind"]
        self.main_metric = "spearman" if self.kind == "scored" else "mrr@10"
        if self.kind == "pairs":
            negatives = {e["negative"] is not None for e in train if e["text"] is not None}
            if len(negatives) > 1:
                raise BertkitError(
                    f"{train[0]['source']}: some pairs have a `negative` and some do not; give every pair one, or none"
                )
            if not [e for e in train if e["text"] is not None]:
                raise BertkitError(f"{train[0]['source']}: no row has an `anchor`; training needs anchored pairs")

    def check(self, examples: list[Example], source: str) -> None:
        if examples[0]["kind"] != self.kind:
            raise BertkitError(f"{source} holds {examples[0]['kind']}, the training data {self.kind}: use one kind")

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[Feature]:
        """One feature per example: `input_ids` the anchor (or, for a corpus-only row, the positive),
        `pos_ids` / `neg_ids` the others (padded with IGNORE by collate; [] when absent)."""

        def ids(texts: list[str | None]) -> list[list[int]]:
            present = [t for t in texts if t is not None]
            encoded = iter(tokenizer.encode_batch(present, max_length=None, truncation="do_not_truncate"))
            out: list[list[int]] = []
            for t in texts:
                if t is None:
                    out.append([])
                    continue
                seq = next(encoded).ids
                out.append(seq if len(seq) <= max_length else seq[: max_length - 1] + [tokenizer.sep_id])
            return out

        anchors = ids([e["text"] if e["text"] is not None else e["text_b"] for e in examples])
        positives = ids([e["text_b"] if e["text"] is not None else None for e in examples])
        negatives = ids([e["negative"] for e in examples])
        return [
            {
                "input_ids": a,
                "token_type_ids": [0] * len(a),
                "pos_ids": p,
                "neg_ids": n,
                "score": e["score"] if e["score"] is not None else 0.0,
                "query": int(e["text"] is not None and e["kind"] is not None),
                "example": i,
            }
            for i, (e, a, p, n) in enumerate(zip(examples, anchors, positives, negatives))
        ]

    # --- model and loss ---------------------------------------------------------------------------
    def build_model(self, config) -> nn.Module:
        return SentenceEmbedder(config, self.pooling, self.dim)

    @staticmethod
    def _encode(model, ids: torch.Tensor) -> torch.Tensor | None:
        """Vectors of padded ids ([B, T], IGNORE as padding); None when the batch has none."""
        if ids.numel() == 0:
            return None
        mask = (ids != IGNORE).long()
        return model(ids.masked_fill(ids == IGNORE, 0), mask)

    def loss(self, model, batch):
        anchors = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        positives = self._encode(model, batch["pos_ids"])
        assert positives is not None, "every training row has a positive (or text_b)"
        if self.kind == "scored":
            cosine = F.cosine_similarity(anchors, positives, dim=-1) * SCALE
            scores = batch["score"]
            # every (i, j) with score_i > score_j: cos_j should be below cos_i
            diff = cosine[None, :] - cosine[:, None]  # [i, j] = cos_j - cos_i
            diff = diff.masked_fill(~(scores[:, None] > scores[None, :]), -1e12)
            return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), 0)
        candidates = positives
        negatives = self._encode(model, batch["neg_ids"])
        if negatives is not None:
            candidates = torch.cat([positives, negatives])
        logits = F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T * SCALE
        # a positive repeated in the batch (two questions, one answer sentence) is no negative for the other
        pos = batch["pos_ids"]
        same = (pos[:, None, :] == pos[None, :, :]).all(-1) & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
        logits[:, : len(pos)] = logits[:, : len(pos)].masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(anchors), device=logits.device))

    # --- predictions ------------------------------------------------------------------------------
    def forward(self, model, batch):
        vectors = [model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])]
        for key in ("pos_ids", "neg_ids"):
            encoded = self._encode(model, batch[key]) if key in batch else None
            vectors.append(encoded if encoded is not None else torch.zeros_like(vectors[0]))  # none in this batch
        return [v.float().cpu() for v in vectors]

    def decode(self, outputs, features, examples):
        anchors, positives, negatives = (torch.cat([o[k] for o in outputs]) for k in range(3))
        out: list[dict] = [{} for _ in examples]
        for row, f in enumerate(features):
            record = {"vector": anchors[row].tolist()}
            e = examples[f["example"]]
            if e.get("kind") is not None and e["text"] is not None:
                record["positive_vector"] = positives[row].tolist()
                if e["negative"] is not None:
                    record["negative_vector"] = negatives[row].tolist()
            out[f["example"]] = record
        return out

    def metrics(self, predictions, examples):
        if self.kind == "scored":
            a = np.array([p["vector"] for p in predictions])
            b = np.array([p["positive_vector"] for p in predictions])
            return {"spearman": spearman(cosines(a, b), np.array([e["score"] for e in examples]))}
        corpus: dict[str, np.ndarray] = {}
        for p, e in zip(predictions, examples):
            if e["text"] is None:  # a corpus-only row: its vector is `vector`
                corpus.setdefault(e["text_b"], np.array(p["vector"]))
                continue
            corpus.setdefault(e["text_b"], np.array(p["positive_vector"]))
            if e["negative"] is not None:
                corpus.setdefault(e["negative"], np.array(p["negative_vector"]))
        texts = list(corpus)
        queries = [
            (np.array(p["vector"]), texts.index(e["text_b"])) for p, e in zip(predictions, examples) if e["text"]
        ]
        return retrieval_metrics(
            np.stack([q for q, _ in queries]), np.stack(list(corpus.values())), [g for _, g in queries]
        )

    # --- what a run writes ------------------------------------------------------------------------
    def parts(self, model, metrics):
        """The encoder alone is saved (a plain BERT checkpoint, as sentence-transformers' Transformer
        module reads it); pooling and normalisation are the pipeline files'."""
        return [("", self, model.bert, metrics)]

    def report(self, out_dir: Path, predictions, examples) -> None:
        if not sentence_files.modules(out_dir):  # started from a plain BERT: make it a pipeline
            sentence_files.write_pipeline(
                out_dir,
                self.pooling,
                int(json.loads((out_dir / "config.json").read_text())["hidden_size"]),
                normalize=False,
            )

    def state(self) -> dict:
        return {"task": self.name, "pooling": self.pooling, "dim": self.dim, "kind": self.kind}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, D] arrays."""
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def retrieval_metrics(queries: np.ndarray, corpus: np.ndarray, gold: list[int]) -> dict[str, float]:
    """recall@1, recall@10 and MRR@10 of each query's gold corpus row, ranked by cosine."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    c = corpus / np.maximum(np.linalg.norm(corpus, axis=1, keepdims=True), 1e-12)
    ranks = []
    for start in range(0, len(q), 1024):
        scores = q[start : start + 1024] @ c.T
        target = scores[np.arange(len(scores)), gold[start : start + 1024]]
        ranks += ((scores > target[:, None]).sum(1) + 1).tolist()  # 1 = first
    r = np.array(ranks)
    return {
        "mrr@10": float(np.where(r <= 10, 1.0 / r, 0.0).mean()),
        "recall@1": float((r == 1).mean()),
        "recall@10": float((r <= 10).mean()),
    }

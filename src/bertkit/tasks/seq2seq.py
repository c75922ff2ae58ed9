"""Sequence to sequence with one BERT (UniLM, Dong et al. 2019): summarise, translate, rewrite.

Data: TSV/JSONL records with `source` and `target` (`bertkit predict`: `source` only, or a .txt file
with one source a line). An example is `[CLS] source [SEP] target [SEP]`, the source as segment A and
the target as segment B, under UniLM's mask (`bertkit.model.seq2seq_mask`): the source sees itself
both ways and never the target; the target sees the source and itself left to right.

As in a left-to-right language model (and transformers' BertLMHeadModel), the hidden state at a
position predicts the token after it, through the masked-LM head tied to the word embeddings: the
source's [SEP] predicts the first target token, the last target token predicts [SEP]. So every target
token is trained in every step, and decoding (`bertkit.generate`) runs exactly as trained: one new
position a step over the cached source and earlier target.

Dev metrics come from generating every dev target (greedy, or beam search with `num_beams`):
`exact_match` (the main metric), BLEU-4 and ROUGE-L (with the `generate` extra, see
`bertkit.generation_metrics`), teacher-forced `token_accuracy` and `loss`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.data.collate import IGNORE
from bertkit.data.readers import read_lines, read_records
from bertkit.errors import BertkitError
from bertkit.generate import Decoder, GenerateOptions, detokenize, generate_ids
from bertkit.generation_metrics import generation_report
from bertkit.model import BertForMaskedLM, seq2seq_mask
from bertkit.tasks import Example, Feature, Task

log = logging.getLogger("bertkit")


class Seq2SeqTask(Task):
    name = "seq2seq"
    main_metric = "exact_match"
    inputs = ("source",)
    optional_inputs = ()

    def __init__(self, max_target_length: int = 64, num_beams: int = 1):
        if max_target_length < 1 or num_beams < 1:
            raise BertkitError(
                f"max_target_length and num_beams must be at least 1, got {max_target_length}, {num_beams}"
            )
        self.max_target_length = max_target_length
        self.num_beams = num_beams
        self.tokenizer = None  # set by `featurize`: decoding and `decode` need it

    # --- data -------------------------------------------------------------------------------------
    def read(self, path: str) -> list[Example]:
        examples = []
        for number, record in read_records(path):
            for key in ("source", "target"):
                if not str(record.get(key) or "").strip():
                    raise BertkitError(
                        f"{path}, line {number}: missing `{key}` (fields found: {', '.join(record)}); "
                        "every record needs `source` and `target`"
                    )
            examples.append({**self.example(record, number, str(path)), "target": str(record["target"])})
        if not examples:
            raise BertkitError(f"{path} holds no examples: expected a header row and one example a line")
        return examples

    def read_inputs(self, path: str) -> list[Example]:
        """Sources: a .txt file with one a line, or TSV/JSONL records with `source`."""
        if Path(path).suffix == ".txt":
            rows = [(n, {"source": line}) for n, line in read_lines(path) if line.strip()]
        else:
            rows = list(read_records(path))
        examples = []
        for number, record in rows:
            if not str(record.get("source") or "").strip():
                raise BertkitError(
                    f"{path}, line {number}: no `source` (fields found: {', '.join(record)}); give every record "
                    "a non-empty `source`, or use a .txt file with one source a line"
                )
            examples.append(self.example(record, number, str(path)))
        if not examples:
            raise BertkitError(f"{path} holds no sources to generate from")
        return examples

    def example(self, record: dict, number: int, source: str = "input") -> Example:
        # `text` holds the source text: every example's `source` names the file it came from
        return {"text": str(record["source"]), "target": None, "line": number, "source": source}

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[Feature]:
        """[CLS] source [SEP] (target [SEP]); `label` holds, at each position, the token after it
        (IGNORE over the source, whose last [SEP] predicts the first target token)."""
        self.tokenizer = tokenizer
        features, cut = [], 0
        for index, e in enumerate(examples):
            src = tokenizer.encode(e["text"], max_length=None, add_special_tokens=False).ids
            tgt = tokenizer.encode(e["target"], max_length=None, add_special_tokens=False).ids if e["target"] else []
            cut += len(src) > max_length - 2 or len(tgt) > self.max_target_length
            src, tgt = src[: max_length - 2], tgt[: self.max_target_length]
            ids = [tokenizer.cls_id, *src, tokenizer.sep_id]
            types = [0] * len(ids)
            label = [IGNORE] * (len(ids) - 1)
            if e["target"] is not None:
                ids += [*tgt, tokenizer.sep_id]
                types += [1] * (len(tgt) + 1)
                label += [*tgt, tokenizer.sep_id]
            label.append(IGNORE)
            features.append({"input_ids": ids, "token_type_ids": types, "example": index, "label": label})
        if cut:
            log.warning(
                "%d of %d examples were cut (sources to max_length - 2 = %d tokens, targets to max_target_length = %d)",
                cut,
                len(examples),
                max_length - 2,
                self.max_target_length,
            )
        return features

    # --- model and loss ---------------------------------------------------------------------------
    def build_model(self, config) -> nn.Module:
        return BertForMaskedLM(config)

    def target_logits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [M, V] at the M positions that predict a target token, their targets [M])."""
        mask = seq2seq_mask(batch["attention_mask"], batch["token_type_ids"])  # [B, T, T]
        hidden = model.bert(batch["input_ids"], mask, batch["token_type_ids"]).last_hidden_state  # [B, T, H]
        predicting = batch["label"] != IGNORE  # [B, T]
        return model.mlm(hidden[predicting]), batch["label"][predicting]

    def loss_counts(self, batch) -> dict[str, int]:
        return {"tokens": int((batch["label"] != IGNORE).sum())}

    def step_loss(self, model, batch, totals) -> torch.Tensor:
        """Cross-entropy summed over the batch's target tokens / the step's target tokens."""
        logits, targets = self.target_logits(model, batch)
        return F.cross_entropy(logits.float(), targets, reduction="sum") / max(totals["tokens"], 1)

    def loss(self, model, batch) -> torch.Tensor:
        return self.step_loss(model, batch, self.loss_counts(batch))

    # --- predictions ------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, model, batch) -> list[dict]:
        """Per row: the generated target ids, and, with a target, its teacher-forced loss and hits."""
        assert self.tokenizer is not None, "featurize sets the tokenizer"
        rows: list[dict] = [{} for _ in range(len(batch["input_ids"]))]
        predicting = batch["label"] != IGNORE
        if predicting.any():
            logits, targets = self.target_logits(model, batch)
            losses = F.cross_entropy(logits.float(), targets, reduction="none")
            hits = logits.argmax(-1) == targets
            row_of = predicting.nonzero()[:, 0]
            for r in range(len(rows)):
                mine = row_of == r
                rows[r].update(loss=float(losses[mine].sum()), hits=int(hits[mine].sum()), count=int(mine.sum()))
        decoder = Decoder(model, self.tokenizer)
        opts = GenerateOptions(
            strategy="beam", num_beams=self.num_beams, max_new_tokens=self.max_target_length, length_penalty=1.0
        )
        source_len = ((batch["token_type_ids"] == 0) & batch["attention_mask"].bool()).sum(1)
        for r, n in enumerate(source_len.tolist()):
            rows[r]["ids"] = generate_ids(decoder, batch["input_ids"][r, :n].tolist(), opts).ids
        return rows

    def decode(self, outputs: list[list[dict]], features: list[Feature], examples: list[Example]) -> list[dict]:
        assert self.tokenizer is not None, "featurize sets the tokenizer"
        predictions: list[dict] = [{} for _ in examples]
        for f, row in zip(features, (row for rows in outputs for row in rows)):
            p = {"generated": detokenize(self.tokenizer, row["ids"])}
            predictions[f["example"]] = {**p, **{k: row[k] for k in ("loss", "hits", "count") if k in row}}
        return predictions

    def metrics(self, predictions: list[dict], examples: list[Example]) -> dict[str, float]:
        assert self.tokenizer is not None, "featurize sets the tokenizer"
        # the reference as the tokenizer gives it back (lower-cased, accents stripped for uncased vocabs)
        references = [
            detokenize(self.tokenizer, self.tokenizer.encode(e["target"], add_special_tokens=False).ids)
            for e in examples
        ]
        count = sum(p["count"] for p in predictions)
        loss = sum(p["loss"] for p in predictions) / max(count, 1)
        return {
            "exact_match": sum(p["generated"] == r for p, r in zip(predictions, references)) / len(examples),
            **generation_report([p["generated"] for p in predictions], references),
            "token_accuracy": sum(p["hits"] for p in predictions) / max(count, 1),
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
        }

    def state(self) -> dict:
        return {"task": self.name, "max_target_length": self.max_target_length, "num_beams": self.num_beams}

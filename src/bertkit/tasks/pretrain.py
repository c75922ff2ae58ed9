"""Pretraining as a task: masked LM + next sentence prediction (Devlin et al. 2018), trained by the same
loop as every fine-tuning task.

Features come from `bertkit pretrain-data` (`bertkit.data.pretraining.PretrainingData.feature`): input
ids already masked, `masked_positions` and the original `masked_ids` there, and `nsp_label` (0: B
follows A in the document, 1: B is random) when the data has sentence pairs. Collation pads both
lists with -100; the padding positions are clamped to 0 for the gather and ignored by the loss
through their -100 targets.

The MLM loss is computed only at the masked positions: the hidden states are gathered to [B, P, H]
before the [H, V] projection onto the vocabulary, which is most of a small model's compute when done
at all T positions (P is about 15% of T).

Without NSP (data built with `nsp: false`) the model is still `BertForPreTraining`, so the saved
directory has one architecture and a continued checkpoint keeps its pooler; the pooler and the NSP
head are frozen (`freeze_nsp`) and carried through unchanged, and only the MLM loss is trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.data.collate import IGNORE
from bertkit.model import BertForPreTraining
from bertkit.tasks import Task


def trim_masked(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, P], targets [B, P]) cut to the most masked tokens of any row in the batch.

    Collation pads the lists to the batch's sequence length T; the real entries come first, so the
    columns past the longest list are all padding. Padding positions become 0 (a valid index for
    the gather) and keep their IGNORE target."""
    targets = batch["masked_ids"]  # [B, T], IGNORE after each row's masked tokens
    width = max(1, int((targets != IGNORE).sum(1).max()))
    positions = batch["masked_positions"][:, :width].clamp(min=0)
    return positions, targets[:, :width]


def freeze_nsp(model: BertForPreTraining) -> list[str]:
    """Stop training the pooler and the NSP head (data without sentence pairs); their names."""
    names = []
    for prefix, module in (("bert.pooler.", model.bert.pooler), ("nsp.", model.nsp)):
        if module is None:
            continue
        for name, p in module.named_parameters():
            p.requires_grad_(False)
            names.append(prefix + name)
    return names


class PretrainTask(Task):
    """MLM + NSP loss for training; MLM accuracy, loss and perplexity and NSP accuracy for evaluation.

    For evaluation each held-out instance is one "example" (the features carry `example`: their
    index); `decode` returns per-instance sums and `metrics` pools them over the whole set, so the MLM
    numbers are per masked token, not means of per-batch means. Reading and featurizing are
    `bertkit pretrain-data`'s (`PretrainingData.feature` gives the features), so the task has no
    read/featurize; it is not in `bertkit.tasks.TASKS` (finetune does not pretrain).
    """

    name = "pretrain"
    main_metric = "mlm_accuracy"

    def __init__(self, nsp: bool = True):
        self.nsp = nsp

    def build_model(self, config) -> nn.Module:
        return BertForPreTraining(config)

    def logits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(MLM logits [B, P, V], NSP logits [B, 2], MLM targets [B, P] with IGNORE at padding)."""
        positions, targets = trim_masked(batch)
        mlm, nsp = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], positions)
        return mlm, nsp, targets

    def loss_counts(self, batch) -> dict[str, int]:
        """What the loss averages over: masked tokens (MLM) and sentence pairs (NSP). The loop sums
        these over a whole optimiser step (micro-batches and processes) and passes the totals back."""
        return {"masked": int((batch["masked_ids"] != IGNORE).sum()), "examples": len(batch["input_ids"])}

    def loss(self, model, batch, counts: dict | None = None) -> torch.Tensor:
        """Cross-entropy summed over the masked tokens / counts["masked"] (+ NSP summed over the pairs /
        counts["examples"]). Without `counts`, the batch's own counts: the mean over the batch."""
        counts = counts or self.loss_counts(batch)
        mlm, nsp, targets = self.logits(model, batch)
        loss = F.cross_entropy(
            mlm.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        ) / max(counts["masked"], 1)
        if self.nsp:
            loss = loss + F.cross_entropy(nsp.float(), batch["nsp_label"], reduction="sum") / counts["examples"]
        return loss

    def step_loss(self, model, batch, totals: dict) -> torch.Tensor:
        return self.loss(model, batch, totals)  # already normalised by the step's counts

    @torch.no_grad()
    def forward(self, model, batch) -> dict[str, torch.Tensor]:
        """Per instance: MLM loss summed over its masked tokens, correct and masked counts, NSP correct."""
        mlm, nsp, targets = self.logits(model, batch)
        real = targets != IGNORE  # [B, P]
        token_loss = F.cross_entropy(
            mlm.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
        )  # [B, P], 0 at padding
        out = {
            "mlm_loss": token_loss.sum(1),
            "mlm_correct": ((mlm.argmax(-1) == targets) & real).sum(1),
            "mlm_count": real.sum(1),
        }
        if self.nsp:
            out["nsp_correct"] = nsp.argmax(-1) == batch["nsp_label"]
        return {k: v.float().cpu() for k, v in out.items()}

    def decode(self, outputs: list[dict], features: list[dict], examples: list) -> list[dict]:
        """One record of sums per instance, in the order of `examples`."""
        merged = {k: torch.cat([o[k] for o in outputs]).tolist() for k in outputs[0]}
        predictions: list[dict] = [{} for _ in examples]
        for row, f in enumerate(features):
            predictions[f["example"]] = {k: v[row] for k, v in merged.items()}
        return predictions

    def metrics(self, predictions: list[dict], examples: list) -> dict[str, float]:
        masked = sum(p["mlm_count"] for p in predictions)
        mlm_loss = sum(p["mlm_loss"] for p in predictions) / max(masked, 1)
        out = {
            "mlm_accuracy": sum(p["mlm_correct"] for p in predictions) / max(masked, 1),
            "mlm_loss": mlm_loss,
            "perplexity": math.exp(min(mlm_loss, 50.0)),
        }
        if self.nsp:
            out["nsp_accuracy"] = sum(p["nsp_correct"] for p in predictions) / len(predictions)
        return out

    def state(self) -> dict:
        return {"task": self.name, "nsp": self.nsp}

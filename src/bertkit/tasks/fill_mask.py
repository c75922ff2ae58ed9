"""Fill-mask: a pretrained model's masked-LM head names the most likely tokens for every [MASK].

No fine-tuning: the model directory needs the head pretraining trained (`bertkit pretrain` saves
it, as does any Hugging Face BertForPreTraining / BertForMaskedLM), and runs with
`bertkit predict --task fill-mask --model DIR --input FILE`. An input is a text (and optionally
`text_b`) with one or more `[MASK]`; each gets its own top-k tokens and probabilities. A word of
several WordPieces, or a Chinese word of several characters (every character is a token), is masked
with one [MASK] per piece or character, as whole-word masking trains it, and each is predicted on
its own.

Labelled data (for `bertkit evaluate`): records with `text` and `label`, the masked tokens in order
(space-separated; Chinese characters may be written together), scored by top-1 and top-k accuracy.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.data.readers import read_records
from bertkit.errors import BertkitError
from bertkit.model import BertForMaskedLM, gather_positions
from bertkit.tasks import Example, Feature, Task
from bertkit.tasks.classify import read_unlabelled

MASK = "[MASK]"


class FillMaskTask(Task):
    name = "fill-mask"
    main_metric = "accuracy"

    def __init__(self, top_k: int = 5):
        if top_k < 1:
            raise BertkitError(f"top_k must be at least 1, got {top_k}")
        self.top_k = top_k
        self.tokenizer = None  # set by `featurize`: `decode` names the predicted tokens with it

    def read(self, path: str) -> list[Example]:
        examples = []
        for number, record in read_records(path):
            if not str(record.get("text") or "").strip() or not str(record.get("label") or "").strip():
                raise BertkitError(
                    f"{path}, line {number}: fill-mask data needs `text` (with [MASK]) and `label` (the masked "
                    f"tokens, space-separated); fields found: {', '.join(record)}"
                )
            examples.append({**self.example(record, number, str(path)), "label": str(record["label"])})
        if not examples:
            raise BertkitError(f"{path} holds no examples: expected a header row and one example a line")
        return examples

    def read_inputs(self, path: str) -> list[Example]:
        return read_unlabelled(path)

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[Feature]:
        self.tokenizer = tokenizer
        features = []
        for index, e in enumerate(examples):
            whole = tokenizer.encode(e["text"], e.get("text_b"), max_length=None).ids
            enc = tokenizer.encode(e["text"], e.get("text_b"), max_length=max_length)
            ids = enc.ids
            positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
            where = f"{e['source']}, line {e['line']}"
            if not positions:
                raise BertkitError(f"{where}: no {MASK} in the text; write {MASK} where a token should be predicted")
            if len(positions) < whole.count(tokenizer.mask_id):
                raise BertkitError(
                    f"{where}: a {MASK} lies past the first {max_length} tokens; shorten the text around it"
                )
            feature = {"input_ids": ids, "token_type_ids": enc.type_ids, "example": index}
            features.append({**feature, "masked_positions": positions})
            if e.get("label") is not None:
                e["label_ids"] = tokenizer.encode(e["label"], add_special_tokens=False).ids
                if len(e["label_ids"]) != len(positions):
                    raise BertkitError(
                        f"{where}: label {e['label']!r} is {len(e['label_ids'])} token(s) but the text has "
                        f"{len(positions)} {MASK}; give one token per {MASK}"
                    )
        return features

    def build_model(self, config) -> nn.Module:
        return BertForMaskedLM(config)

    def loss(self, model, batch) -> torch.Tensor:
        raise BertkitError("fill-mask uses the pretrained masked-LM head as it is; train it with `bertkit pretrain`")

    @torch.no_grad()
    def forward(self, model, batch) -> dict[str, torch.Tensor]:
        """Top-k probabilities and token ids at every mask: [B, P, k] each, P the most masks of a row."""
        positions = batch["masked_positions"]  # [B, P], IGNORE after each row's masks
        hidden = model.bert(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
        logits = model.mlm(gather_positions(hidden, positions.clamp(min=0)))  # [B, P, V]
        probs, ids = logits.float().softmax(-1).topk(self.top_k, dim=-1)
        return {"probs": probs.cpu(), "ids": ids.cpu(), "masks": (positions >= 0).sum(1).cpu()}

    def decode(self, outputs: list[dict], features: list[Feature], examples: list[Example]) -> list[dict]:
        assert self.tokenizer is not None, "featurize sets the tokenizer"
        rows = [(o["probs"][r], o["ids"][r], int(o["masks"][r])) for o in outputs for r in range(len(o["masks"]))]
        predictions: list[dict] = [{} for _ in examples]
        for f, (probs, ids, n) in zip(features, rows):
            masks = []
            for p in range(n):
                tokens = self.tokenizer.convert_ids_to_tokens(ids[p].tolist())
                masks.append(
                    {
                        "position": f["masked_positions"][p],
                        "predictions": [
                            {"token": t, "id": int(i), "score": round(float(s), 6)}
                            for t, i, s in zip(tokens, ids[p], probs[p])
                        ],
                    }
                )
            e = examples[f["example"]]
            predictions[f["example"]] = {"filled": _fill(e["text"], [m["predictions"][0]["token"] for m in masks])}
            predictions[f["example"]]["masks"] = masks
        return predictions

    def metrics(self, predictions: list[dict], examples: list[Example]) -> dict[str, float]:
        top1 = topk = total = 0
        for p, e in zip(predictions, examples):
            for m, gold in zip(p["masks"], e["label_ids"]):
                ranked = [c["id"] for c in m["predictions"]]
                top1 += ranked[0] == gold
                topk += gold in ranked
                total += 1
        return {"accuracy": top1 / max(total, 1), f"top{self.top_k}_accuracy": topk / max(total, 1)}

    def state(self) -> dict:
        return {"task": self.name, "top_k": self.top_k}


def _fill(text: str, tokens: list[str]) -> str:
    """`text` with its [MASK]s replaced, in order, by `tokens` (a WordPiece continuation glued on)."""
    parts = text.split(MASK)
    out = parts[0]
    for token, rest in zip(tokens, parts[1:]):
        if token.startswith("##"):
            out = out.rstrip() + token[2:]
        else:
            out += token
        out += rest
    return out + "".join(MASK + p for p in parts[len(tokens) + 1 :])

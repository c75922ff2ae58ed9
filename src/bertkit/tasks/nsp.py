"""Next sentence prediction: a pretrained model's NSP head says whether `text_b` follows `text`.

No fine-tuning: the model directory needs the pooler and NSP head pretraining trained (`bertkit
pretrain` with sentence pairs saves them, as does Hugging Face's BertForPreTraining), and runs with
`bertkit predict --task nsp --model DIR --input FILE` on records with `text` and `text_b`. As in
pretraining and in transformers, class 0 is "B follows A" (`is_next`), class 1 "B is random"
(`not_next`). Labelled data (`bertkit evaluate`) adds `label`: is_next or not_next.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.data.readers import read_records
from bertkit.errors import BertkitError, suggest
from bertkit.model import BertModel
from bertkit.tasks import Example, Feature
from bertkit.tasks.classify import ClassifyTask

LABELS = ["is_next", "not_next"]


class BertForNextSentencePrediction(nn.Module):
    """The encoder, its pooler and the NSP head of BertForPreTraining (its parameter names too)."""

    def __init__(self, config):
        super().__init__()
        self.bert = BertModel(config)
        self.nsp = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> logits [B, 2]."""
        return self.nsp(self.bert(input_ids, attention_mask, token_type_ids).pooler_output)


class NspTask(ClassifyTask):
    """Sentence pairs in, is_next / not_next out, with the classify task's featurizing and decoding."""

    name = "nsp"
    inputs = ("text", "text_b")
    optional_inputs = ()

    def __init__(self, labels: list[str] | None = None):
        super().__init__(labels=LABELS)

    def read(self, path: str) -> list[Example]:
        examples = []
        for number, record in read_records(path):
            label = str(record.get("label") or "")
            if label not in LABELS:
                raise BertkitError(
                    f"{path}, line {number}: label {label!r}{suggest(label, LABELS)} is not one of "
                    f"{', '.join(LABELS)} (is_next: text_b follows text)"
                )
            examples.append({**self.example(record, number, str(path)), "label": label})
        self.check_pairs(examples)
        return examples

    def read_inputs(self, path: str) -> list[Example]:
        examples = super().read_inputs(path)
        self.check_pairs(examples)
        return examples

    def check_pairs(self, examples: list[Example]) -> None:
        for e in examples:
            if not e.get("text_b"):
                raise BertkitError(
                    f"{e['source']}, line {e['line']}: no `text_b`; next sentence prediction takes pairs: "
                    "give every record `text` and `text_b`"
                )

    def fit(self, train: list[Example]) -> None:
        pass

    def featurize(self, examples: list[Example], tokenizer, max_length: int) -> list[Feature]:
        self.check_pairs(examples)
        return super().featurize(examples, tokenizer, max_length)

    def build_model(self, config) -> nn.Module:
        return BertForNextSentencePrediction(config)

    def loss(self, model, batch) -> torch.Tensor:
        raise BertkitError("nsp uses the pretrained NSP head as it is; train it with `bertkit pretrain`")

    def report(self, out_dir, predictions, examples) -> None:
        pass

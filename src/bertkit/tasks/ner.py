"""Named-entity recognition (`ner`): one BIO or BIOES tag per word, a softmax or a CRF head.

Data: CoNLL (`token ... tag` a line, a blank line between sentences) or CLUENER JSON lines
(`{"text": ..., "label": {type: {entity: [[start, end]]}}}`, end inclusive; each character a token).
An example keeps `tokens`, `tags`, a `text` and each token's character `spans` in it, so entities
come back with exact character offsets.

Alignment: a word's tag sits on its FIRST word piece; later pieces, [CLS] and [SEP] get -100 and are
ignored. A feature's `words` list gives, per input position, the word whose first piece it is (else
-100): it marks the positions to tag at prediction time, when there are no labels. A word with no
pieces (whitespace, control characters) has no position and is predicted `O`, or `I-X` when it sits
inside a predicted entity of type X (CLUENER entities may contain spaces).

Long sentences are split into overlapping windows of pieces (half a window apart). Each word is
decoded from the window where it is most central (most pieces to the nearer edge), and the CRF runs
Viterbi once over the whole sentence's merged word scores, so its output is always a valid sequence.
In training, a window that starts (or, BIOES, ends) inside an entity does not train the cut part on
that window: a CRF would have to score an impossible `I-X` start; the neighbouring window covers it.

Shapes: B = batch, T = pieces, W = tagged words in a row, L = labels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from seqeval.scheme import IOB2, IOBES, Entities

from bertkit.data.collate import IGNORE
from bertkit.data.readers import read_lines
from bertkit.data.tagging import (
    is_json_lines,
    json_lines,
    make_example,
    read_cluener,
    read_conll,
    split_words,
    token_line,
)
from bertkit.errors import BertkitError, suggest
from bertkit.metrics import entity_report
from bertkit.model import BertForTokenClassification
from bertkit.tasks import Task, build_input, windows
from bertkit.tasks.crf import CRF, SCHEMES, allowed_transitions

log = logging.getLogger("bertkit")

HEADS = ("softmax", "crf")


def _compact(x: torch.Tensor, where: torch.Tensor, *others: torch.Tensor):
    """Gather each row's positions where `where` holds to its left: x [B, T, L] -> [B, W, L],
    mask [B, W] (left-aligned, as the CRF needs), and every `others` [B, T] -> [B, W]."""
    n = where.sum(1)  # [B]
    width = max(int(n.max()), 1)
    order = torch.sort((~where).int(), dim=1, stable=True).indices[:, :width]  # True positions first
    mask = torch.arange(width, device=x.device) < n[:, None]
    gathered = x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))
    return (gathered, mask, *(o.gather(1, order) for o in others))


def _viterbi(crf: CRF, emissions: list, chunk: int = 256) -> list[list[int]]:
    """The CRF's best path for each sentence's word scores [W, L] (None: no words), batched by length."""
    paths: list[list[int]] = [[] for _ in emissions]
    order = sorted((i for i, x in enumerate(emissions) if x is not None), key=lambda i: len(emissions[i]))
    for c in range(0, len(order), chunk):
        part = order[c : c + chunk]
        lengths = torch.tensor([len(emissions[i]) for i in part])
        padded = torch.nn.utils.rnn.pad_sequence([emissions[i] for i in part], batch_first=True)  # [B, W, L]
        mask = torch.arange(int(lengths.max())) < lengths[:, None]
        for i, path in zip(part, crf.decode(padded, mask)):
            paths[i] = path
    return paths


def _fill(n: int, predicted: dict[int, str]) -> list[str]:
    """Tags of all n words from those of words with pieces: a gap inside an entity continues it."""
    tags, gap, last = ["O"] * n, [], "O"
    for w in range(n):
        if w not in predicted:
            gap.append(w)
            continue
        tag = predicted[w]
        if gap and last[0] in "BI" and tag[0] in "IE" and last[2:] == tag[2:]:
            for g in gap:
                tags[g] = "I-" + tag[2:]
        tags[w], gap, last = tag, [], tag
    return tags


class NerTask(Task):
    """Tag words with BIO / BIOES labels; `head="crf"` adds transition scores and Viterbi decoding."""

    name = "ner"
    main_metric = "f1"
    optional_inputs = ()

    def __init__(self, labels: list[str] | None = None, head: str = "softmax", scheme: str | None = None):
        if head not in HEADS:
            raise BertkitError(f"unknown NER head `{head}`{suggest(head, HEADS)}; use one of: {', '.join(HEADS)}")
        if scheme is not None and scheme not in SCHEMES:
            raise BertkitError(
                f"unknown tagging scheme `{scheme}`{suggest(scheme, SCHEMES)}; use one of: {', '.join(SCHEMES)}"
            )
        self.labels = list(labels) if labels is not None else None
        self.head, self.scheme, self.windowed = head, scheme, 0
        if self.labels is not None:
            self.scheme = scheme or ("BIOES" if any(t[0] in "ES" for t in self.labels) else "BIO")
            allowed_transitions(self.labels, self.scheme)  # rejects labels the scheme cannot hold

    @property
    def fitted_scheme(self) -> str:
        """BIO or BIOES, once `fit` (or task.json) has set it."""
        if self.scheme is None:
            raise BertkitError("ner: no tagging scheme yet: fit the task on training data first")
        return self.scheme

    def read(self, path: str) -> list[dict]:
        return read_cluener(path, self.scheme or "BIO") if is_json_lines(path) else read_conll(path)

    def read_inputs(self, path: str) -> list[dict]:
        """Raw text a line (or JSON lines with `text`), split into words; CoNLL files keep their tokens."""
        if Path(path).suffix.lower() in (".conll", ".bio"):
            return read_conll(path, labelled=False)
        records = (
            json_lines(path)
            if is_json_lines(path)
            else ((n, {"text": line}) for n, line in read_lines(path) if line.strip())
        )
        examples = []
        for number, record in records:
            text = record["text"]
            spans = split_words(text)
            examples.append(make_example([text[s:e] for s, e in spans], None, text, spans, number, path, "text"))
        if not examples:
            raise BertkitError(f"{path} holds no texts: write one text a line")
        return examples

    def example(self, record: dict, number: int, source: str = "input") -> dict:
        text = record["text"]
        spans = split_words(text)
        return make_example([text[s:e] for s, e in spans], None, text, spans, number, source, "text")

    def fit(self, train: list[dict]) -> None:
        if self.scheme is None:
            self.scheme = "BIOES" if any(t[0] in "ES" for e in train for t in e["tags"]) else "BIO"
        if self.labels is None:
            self.labels = ["O"] + sorted({t for e in train for t in e["tags"]} - {"O"})
        if len(self.label_set) < 2 or "O" not in self.label_set:
            raise BertkitError(
                f"{train[0]['source']}: labels {self.label_set} need `O` and at least one entity "
                "tag; check that the training file is tagged"
            )
        self._validate(train, train[0]["source"])

    def check(self, examples: list[dict], source: str) -> None:
        self._validate(examples, source)

    def _validate(self, examples: list[dict], source: str) -> None:
        """Every tag known and allowed by the scheme, every sentence a valid sequence; errors name the line."""
        index = {t: i for i, t in enumerate(self.label_set)}
        for e in examples:
            for i, tag in enumerate(e["tags"]):
                if tag != "O" and tag[0] not in SCHEMES[self.fitted_scheme]:
                    raise BertkitError(
                        f"{source}, line {token_line(e, i)}: {tag!r} is not a {self.fitted_scheme} tag; "
                        'pass scheme="BIOES" for E-/S- tags, or retag the file'
                    )
                if tag not in index:
                    raise BertkitError(
                        f"{source}, line {token_line(e, i)}: tag {tag!r} never occurs in the training "
                        f"data (labels: {', '.join(self.label_set)}); fix the tag or add training "
                        "sentences that use it"
                    )
        start, trans, end = (m.tolist() for m in allowed_transitions(self.label_set, self.fitted_scheme))
        for e in examples:
            ids = [index[t] for t in e["tags"]]
            for i, j in enumerate(ids):
                if not (start[j] if i == 0 else trans[ids[i - 1]][j]):
                    self._sequence_error(source, e, i, "start a sentence" if i == 0 else f"follow {e['tags'][i - 1]!r}")
            if ids and not end[ids[-1]]:
                self._sequence_error(source, e, len(ids) - 1, "end a sentence")

    def _sequence_error(self, source: str, e: dict, i: int, what: str):
        raise BertkitError(
            f"{source}, line {token_line(e, i)}: {e['tags'][i]!r} cannot {what} in {self.fitted_scheme}; "
            "an entity opens with B- (IOB1 data, where it may open with I-, must be "
            "converted to BIO) and, in BIOES, closes with E-: fix the tags"
        )

    def featurize(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        size = max_length - 2  # pieces per window besides [CLS] and [SEP]
        if size < 1:
            raise BertkitError(f"max_length={max_length} leaves no room for text; use e.g. 128")
        label_id = {t: i for i, t in enumerate(self.label_set)}
        start_ok, _, end_ok = (m.tolist() for m in allowed_transitions(self.label_set, self.fitted_scheme))
        encoded = tokenizer.encode_words_batch([e["tokens"] for e in examples])
        features, self.windowed = [], 0
        for index, (e, (ids, word_ids)) in enumerate(zip(examples, encoded)):
            word_at, label_at = [IGNORE] * len(ids), [IGNORE] * len(ids)  # per piece: word, tag of first pieces
            for p, w in enumerate(word_ids):
                if p == 0 or w != word_ids[p - 1]:
                    word_at[p] = w
                    if e["tags"] is not None:
                        label_at[p] = label_id[e["tags"][w]]
            spans = windows(len(ids), size, size // 2)
            self.windowed += len(spans) > 1
            for s, t in spans:
                input_ids, types = build_input(tokenizer, ids[s:t])
                labels = [IGNORE] + label_at[s:t] + [IGNORE]
                if len(spans) > 1:
                    self._trim_cut_entity(labels, start_ok, end_ok)
                features.append(
                    {
                        "input_ids": input_ids,
                        "token_type_ids": types,
                        "example": index,
                        "label": labels,
                        "words": [IGNORE] + word_at[s:t] + [IGNORE],
                    }
                )
        if self.windowed:
            log.info(
                "%d of %d sentences are longer than max_length=%d and were split into overlapping "
                "windows (each word is tagged from the window where it is most central)",
                self.windowed,
                len(examples),
                max_length,
            )
        return features

    @staticmethod
    def _trim_cut_entity(labels: list[int], start_ok: list[bool], end_ok: list[bool]) -> None:
        """Ignore the labels of an entity cut by the window's edges (an `I-X` first, a `B-X` last in BIOES)."""
        tagged = [p for p, y in enumerate(labels) if y != IGNORE]
        for p in tagged:
            if start_ok[labels[p]]:
                break
            labels[p] = IGNORE
        for p in reversed(tagged):
            if labels[p] == IGNORE or end_ok[labels[p]]:
                break
            labels[p] = IGNORE

    def build_model(self, config):
        if self.labels is None:
            raise BertkitError("the NER task has no labels yet: call fit(train) first, or pass labels=")
        model = BertForTokenClassification(config, len(self.label_set))
        if self.head == "crf":
            model.crf = CRF(self.label_set, self.fitted_scheme)  # saved as crf.start / crf.end / crf.transitions
        return model

    def loss(self, model, batch) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # [B, T, L]
        labels = batch["label"]  # [B, T], IGNORE except on first pieces
        tagged = labels != IGNORE
        if not bool(tagged.any()):  # e.g. only whitespace: nothing to learn, but keep the graph
            zero = logits.sum() * 0.0  # (every parameter gets a gradient, as DDP expects)
            return zero + sum(p.sum() for p in model.crf.parameters()) * 0.0 if self.head == "crf" else zero
        if self.head == "softmax":
            return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        emissions, mask, tags = _compact(logits, tagged, labels)  # [B, W, L], [B, W], [B, W]
        keep = mask[:, 0]  # rows with at least one tagged word (the CRF needs a first position)
        return model.crf(emissions[keep], tags[keep], mask[keep])

    def forward(self, model, batch) -> dict:
        """{"logits": per row [n words tagged in the row, L] on the CPU, "crf": its parameters or None}."""
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float().cpu()
        where = (batch["words"] >= 0).cpu()
        crf = None
        if self.head == "crf":  # decode gets no model: hand it the learned transition scores
            crf = {k: v.detach().float().cpu() for k, v in model.crf.state_dict().items()}
        return {"logits": [row[keep] for row, keep in zip(logits, where)], "crf": crf}

    def decode(self, outputs, features, examples) -> list[dict]:
        rows = [row for out in outputs for row in out["logits"]]
        crf = None
        if self.head == "crf" and outputs:
            crf = CRF(self.label_set, self.fitted_scheme)
            crf.load_state_dict(outputs[0]["crf"])  # what `forward` took from the model
        # best[example][word] = (pieces to the nearer window edge, [L] scores from that window)
        best: list[dict[int, tuple]] = [{} for _ in examples]
        for f, row in zip(features, rows):
            chosen, size, k = best[f["example"]], len(f["input_ids"]) - 2, 0
            for i, w in enumerate(f["words"]):
                if w < 0:
                    continue
                centrality = min(i - 1, size - i)  # window pieces sit at positions 1 .. size
                if w not in chosen or centrality > chosen[w][0]:
                    chosen[w] = (centrality, row[k])
                k += 1
        words = [sorted(chosen) for chosen in best]
        emissions = [torch.stack([c[w][1] for w in ws]) if ws else None for c, ws in zip(best, words)]  # [W, L]
        if crf is not None:
            ids = _viterbi(crf, emissions)
        else:
            ids = [x.argmax(-1).tolist() if x is not None else [] for x in emissions]
        predictions = []
        for e, ws, path in zip(examples, words, ids):
            tags = _fill(len(e["tokens"]), {w: self.label_set[j] for w, j in zip(ws, path)})
            predictions.append({"tags": tags, "entities": self.entities(tags, e)})
        return predictions

    def entities(self, tags: list[str], example: dict) -> list[dict]:
        """Entities with end-exclusive character offsets into example["text"]. Extraction is seqeval's
        strict mode, as in the metrics: a chunk that does not open with B- (or S-) is no entity, so a
        softmax head's `O I-PER` yields nothing."""
        found = Entities([tags], IOB2 if self.fitted_scheme == "BIO" else IOBES).entities[0]
        spans, text = example["spans"], example["text"]
        return [
            {
                "type": ent.tag,
                "text": text[spans[ent.start][0] : spans[ent.end - 1][1]],
                "start": spans[ent.start][0],
                "end": spans[ent.end - 1][1],
            }
            for ent in found
        ]

    def metrics(self, predictions, examples) -> dict[str, float]:
        """Entity precision / recall / F1 (seqeval strict) and per type `TYPE_f1` etc. as flat keys."""
        report = entity_report([p["tags"] for p in predictions], [e["tags"] for e in examples], self.fitted_scheme)
        flat = {k: report[k] for k in ("precision", "recall", "f1")}
        for kind, values in report["per_type"].items():
            flat.update({f"{kind}_{k}": v for k, v in values.items()})
        return flat

    def state(self) -> dict:
        return {"task": self.name, "labels": self.labels, "head": self.head, "scheme": self.scheme}

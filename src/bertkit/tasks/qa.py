"""Extractive question answering (`qa`): SQuAD v1.1 and v2.0.

Data: SQuAD JSON ({"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}) or JSONL, one {"id"?, "question",
"context", "answers"?} a line. Every answer is checked against its offsets while reading, so a broken
file fails before any training.

Input: [CLS] question [SEP] context window [SEP]. The question keeps its first `max_query_length`
tokens. A context longer than what is left of `max_length` is cut into windows that start every
`doc_stride` tokens, as in google-research/bert's run_squad.py (there `doc_stride` is the step between
window starts; Hugging Face's tokenizer `stride` is the overlap instead). Nothing is cut off: windows
continue until one reaches the end of the context. A window is trained to point at its answer, or at
[CLS] (position 0) when the answer is not wholly inside it or the question has none (SQuAD 2.0).

Decoding follows google-research/bert's write_predictions: in each window the `n_best` start and end
positions; a span is valid when both ends are context tokens, end >= start, it has at most
`max_answer_length` tokens, and its start token has the most context in this window (a token seen by
two windows is scored where it sits furthest from a window edge); score = start + end logit. The
answer is sliced from the original context with the tokens' character offsets, so it is exact
(accents, case, CJK). SQuAD 2.0: the null answer scores min over windows of start[0] + end[0] and is
predicted when it beats the best span (threshold 0).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.data.readers import parse_json, read_records
from bertkit.errors import BertkitError
from bertkit.metrics import squad_report
from bertkit.model import BertForQuestionAnswering
from bertkit.tasks import Task, build_input

log = logging.getLogger("bertkit")

SHAPE = (
    'SQuAD JSON: {"data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ..., '
    '"question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}'
)


# --- Reading ----------------------------------------------------------------------------------------
def _squad_json(p: Path):
    """(where, record) for every question of a SQuAD JSON file; record = the qa dict + its context."""
    if not p.is_file():
        raise BertkitError(f"{p} not found; pass a SQuAD .json file or a .jsonl file")
    raw = p.read_bytes()
    if not raw.strip():
        raise BertkitError(f"{p} is empty: expected {SHAPE}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BertkitError(f"{p}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    data = parse_json(
        text, str(p), f"expected {SHAPE}, or name the file .jsonl for one question a line", whole_file=True
    )
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BertkitError(f"{p}: no `data` list at the top; expected {SHAPE}")
    for i, article in enumerate(data["data"]):
        title = article.get("title") if isinstance(article, dict) else None
        where = f"article {i}" + (f" ({title!r})" if title else "")
        for j, paragraph in enumerate(_field(article, "paragraphs", list, p, where)):
            place = f"{where}, paragraph {j}"
            context = _field(paragraph, "context", str, p, place)
            for k, qa in enumerate(_field(paragraph, "qas", list, p, place)):
                if not isinstance(qa, dict) or "id" not in qa:
                    raise BertkitError(
                        f"{p}, {place}, question #{k}: not an object with an `id`; give "
                        f"every question a unique id, as in {SHAPE}"
                    )
                yield f"{place}, question {qa['id']}", {**qa, "context": context}


def _field(record, key: str, kind: type, p, where: str):
    """record[key], which must exist and be a `kind`; otherwise an error naming file and record."""
    if not isinstance(record, dict) or key not in record:
        found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise BertkitError(f"{p}, {where}: missing `{key}` (found: {found}); add it, as in {SHAPE}")
    if not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool)):
        raise BertkitError(
            f"{p}, {where}: `{key}` should be a {kind.__name__}, got "
            f"{type(record[key]).__name__} {str(record[key])[:40]!r}; fix it, as in {SHAPE}"
        )
    return record[key]


def _example(p, where: str, record: dict, labelled: bool) -> dict:
    """One checked example; with `labelled`, every answerable question needs answers that match their
    offsets: context[answer_start: answer_start + len(text)] == text."""
    question, context = _field(record, "question", str, p, where), _field(record, "context", str, p, where)
    for key, text in (("question", question), ("context", context)):
        if not text.strip():
            raise BertkitError(f"{p}, {where}: empty `{key}`; give the text or drop the question")
    impossible = bool(record.get("is_impossible", False))
    answers = []
    if labelled and not impossible:
        for n, answer in enumerate(_field(record, "answers", list, p, where)):
            text = _field(answer, "text", str, p, f"{where}, answer {n}")
            start = _field(answer, "answer_start", int, p, f"{where}, answer {n}")
            if start < 0 or context[start : start + len(text)] != text:
                found = context.find(text)
                hint = (
                    f"the text occurs at answer_start={found}"
                    if found >= 0
                    else "the text does not occur in the context at all"
                )
                raise BertkitError(
                    f"{p}, {where}, answer {n}: context[{start}:{start + len(text)}] is "
                    f"{context[start : start + len(text)]!r}, not the answer {text!r} ({hint}); fix "
                    "answer_start or the text so that context[answer_start:answer_start+len(text)] == text"
                )
            answers.append({"text": text, "start": start})
        if not answers:
            raise BertkitError(
                f"{p}, {where}: no answers; give at least one, or mark an unanswerable "
                'question (SQuAD 2.0) with "is_impossible": true'
            )
    elif labelled and record.get("answers"):
        raise BertkitError(
            f"{p}, {where}: marked is_impossible but has answers; drop the answers "
            "(SQuAD 2.0 keeps them as `plausible_answers`) or the is_impossible flag"
        )
    return {
        "id": str(record["id"]),
        "question": question,
        "context": context,
        "answers": answers,
        "impossible": impossible and labelled,
        "line": where,
        "source": str(p),
    }


def read_squad(path, labelled: bool = True) -> list[dict]:
    """Examples {"id", "question", "context", "answers": [{"text", "start"}], "impossible", "line",
    "source"} from SQuAD JSON or (for `.jsonl`) one question a line. Without `labelled`, answers are
    neither needed nor read."""
    p = Path(path)
    if p.suffix.lower() == ".jsonl":
        records = ((f"line {n}", {"id": f"line-{n}", **r}) for n, r in read_records(p))
    else:
        records = _squad_json(p)
    examples: list[dict] = []
    seen: dict[str, str] = {}
    for where, record in records:
        e = _example(p, where, record, labelled)
        if e["id"] in seen:
            raise BertkitError(
                f"{p}, {where}: question id {e['id']!r} was already used by {seen[e['id']]}; "
                "ids key the predictions, so give every question its own"
            )
        seen[e["id"]] = where
        examples.append(e)
    if not examples:
        raise BertkitError(f"{p} holds no questions; expected {SHAPE}")
    return examples


# --- Windows and decoding helpers -------------------------------------------------------------------
def doc_windows(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most `size` tokens, starting every `stride` tokens until one reaches
    the end (google-research/bert's doc spans; the last one may be shorter). An empty context still
    gets one (empty) window, so every question has a feature."""
    spans, start = [], 0
    while True:
        end = min(start + size, length)
        spans.append((start, end))
        if end >= length:
            return spans
        start += min(stride, size)


def _answer_tokens(starts: list[int], ends: list[int], char_start: int, char_end: int):
    """(first, last) context token overlapping chars [char_start, char_end), or None if none does."""
    first = bisect.bisect_right(ends, char_start)  # first token that ends after the answer starts
    last = bisect.bisect_left(starts, char_end) - 1  # last token that starts before the answer ends
    return (first, last) if first <= last else None


def max_context_owner(spans: list[tuple[int, int]]) -> np.ndarray:
    """For every context token, the index of the span (in doc order) where it has the most context:
    score = min(tokens to its left, tokens to its right) + 0.01 * span length; ties go to the earlier
    span (google-research/bert's _check_is_max_context)."""
    length = max(end for _, end in spans)
    best, owner = np.full(length, -1.0), np.zeros(length, dtype=np.int64)
    for w, (start, end) in enumerate(spans):
        d = np.arange(start, end)
        score = np.minimum(d - start, end - 1 - d) + 0.01 * (end - start)
        better = score > best[start:end]
        best[start:end][better] = score[better]
        owner[start:end][better] = w
    return owner


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite values of x, largest first."""
    order = np.argsort(-x, kind="stable")[:k]
    return order[np.isfinite(x[order])]


# --- The task ---------------------------------------------------------------------------------------
class QATask(Task):
    name = "qa"
    main_metric = "f1"
    metric_scale = 100.0  # EM and F1 are percentages, as in the SQuAD scripts
    default_max_length = 384  # run_squad.py's: room for a question and a useful stretch of context
    inputs = ("question", "context")
    optional_inputs = ("id",)

    def __init__(
        self,
        labels=None,
        doc_stride: int = 128,
        max_query_length: int = 64,
        max_answer_length: int = 30,
        n_best: int = 20,
        version: str | None = None,
    ):
        # `labels` is accepted (and ignored) so that every task is built the same way.
        for key, value in (
            ("doc_stride", doc_stride),
            ("max_query_length", max_query_length),
            ("max_answer_length", max_answer_length),
            ("n_best", n_best),
        ):
            if not isinstance(value, int) or value < 1:
                raise BertkitError(f"qa: {key} must be a positive whole number, got {value!r}")
        if version not in (None, "1.1", "2.0"):
            raise BertkitError(
                f"qa: version {version!r} is not a SQuAD version; use '1.1', '2.0' or "
                "leave it out to detect it from the training data"
            )
        self.doc_stride, self.max_query_length = doc_stride, max_query_length
        self.max_answer_length, self.n_best, self.version = max_answer_length, n_best, version
        self.windowed = 0

    def read(self, path: str) -> list[dict]:
        return read_squad(path, labelled=True)

    def read_inputs(self, path: str) -> list[dict]:
        return read_squad(path, labelled=False)

    def example(self, record: dict, number: int, source: str = "input") -> dict:
        return {
            "id": str(record.get("id") or f"input-{number}"),
            "question": record["question"],
            "context": record["context"],
            "answers": [],
            "impossible": False,
            "line": f"input {number}",
            "source": source,
        }

    def fit(self, train: list[dict]) -> None:
        if self.version is None:  # SQuAD 2.0 = there are unanswerable questions to learn
            self.version = "2.0" if any(e["impossible"] for e in train) else "1.1"
            log.info(
                "qa: SQuAD %s data (%s)",
                self.version,
                "some questions are unanswerable" if self.version == "2.0" else "every question has an answer",
            )

    def check(self, examples: list[dict], source: str) -> None:
        impossible = sum(e["impossible"] for e in examples)
        if impossible and self.version == "1.1":
            log.warning(
                "%s: %d unanswerable questions, but the model was trained on SQuAD 1.1 data and "
                "always answers: they will score 0",
                source,
                impossible,
            )

    def featurize(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        """Features {"input_ids", "token_type_ids", "example", "start", "end", "window", "offsets"}.

        `window` = (position of the first context token in input_ids, first context token, end) and
        `offsets` = the character span of each context token in the window, in order. Both are tuples
        on purpose: `collate` turns lists and numbers into tensors but leaves tuples out of the batch,
        and decode reads them from the features as Python values. `start`/`end` index input_ids
        (0 = [CLS]: no answer in this window).
        """
        # Tokenize each distinct context once (SQuAD has ~5 questions per paragraph); the library
        # runs the batch on all cores. [1:-1] drops the [CLS]/[SEP] that encode_batch adds.
        contexts = list(dict.fromkeys(e["context"] for e in examples))
        encoded = {
            c: (enc.ids[1:-1], enc.offsets[1:-1])
            for c, enc in zip(contexts, tokenizer.encode_batch(contexts, max_length=None))
        }
        questions = tokenizer.encode_batch([e["question"] for e in examples], max_length=None)
        features, self.windowed, lost, gaps, long_questions = [], 0, 0, 0, 0
        bounds = {}  # context -> (token starts, token ends) for char -> token lookups
        for index, (e, q) in enumerate(zip(examples, questions)):
            query = q.ids[1:-1][: self.max_query_length]
            long_questions += len(q.ids) - 2 > self.max_query_length
            ids, offsets = encoded[e["context"]]
            budget = max_length - len(query) - 3  # [CLS] query [SEP] window [SEP]
            if budget < 1:
                raise BertkitError(
                    f"{e['source']}, {e['line']}: max_length={max_length} leaves no room for the context "
                    f"after the {len(query)}-token question; use max_length >= {len(query) + 4}"
                )
            answer = None
            if e["answers"]:  # trained on the first gold answer, as run_squad.py does
                if e["context"] not in bounds:
                    bounds[e["context"]] = ([s for s, _ in offsets], [t for _, t in offsets])
                gold = e["answers"][0]
                answer = _answer_tokens(*bounds[e["context"]], gold["start"], gold["start"] + len(gold["text"]))
                lost += answer is None
            spans = doc_windows(len(ids), budget, self.doc_stride)
            self.windowed += len(spans) > 1
            gaps += len(spans) > 1 and self.doc_stride >= budget
            first = len(query) + 2
            for start, end in spans:
                input_ids, types = build_input(tokenizer, query, ids[start:end])
                a_start, a_end = answer if answer is not None else (-1, -1)
                inside = answer is not None and start <= a_start and a_end < end
                features.append(
                    {
                        "input_ids": input_ids,
                        "token_type_ids": types,
                        "example": index,
                        "start": a_start - start + first if inside else 0,
                        "end": a_end - start + first if inside else 0,
                        "window": (first, start, end),
                        "offsets": tuple(offsets[start:end]),
                    }
                )
        if self.windowed:
            log.info(
                "qa: %d of %d questions have contexts longer than max_length=%d allows and were split "
                "into windows every %d tokens",
                self.windowed,
                len(examples),
                max_length,
                self.doc_stride,
            )
        if long_questions:
            log.warning(
                "qa: %d of %d questions are longer than max_query_length=%d tokens and were cut to "
                "their first %d (raise --qa.max-query-length to keep more)",
                long_questions,
                len(examples),
                self.max_query_length,
                self.max_query_length,
            )
        if gaps:
            log.warning(
                "qa: for %d questions doc_stride=%d is not below the context tokens a window holds, so "
                "their windows do not overlap and an answer across a window edge is whole in none; "
                "use a smaller doc_stride or a larger max_length",
                gaps,
                self.doc_stride,
            )
        if lost:
            log.warning(
                "qa: %d answers cover no token (only spaces or control characters) and are trained as no answer", lost
            )
        return features

    def build_model(self, config):
        return BertForQuestionAnswering(config)

    def logits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(start [B, T], end [B, T]); padding gets the lowest score, so the softmax only sees tokens."""
        start, end = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        pad = batch["attention_mask"] == 0
        low = torch.finfo(start.dtype).min
        return start.masked_fill(pad, low), end.masked_fill(pad, low)

    def loss(self, model, batch) -> torch.Tensor:
        start, end = self.logits(model, batch)
        last = start.shape[1] - 1  # targets lie inside their own row; the clamp only guards that
        return (
            F.cross_entropy(start, batch["start"].clamp(0, last)) + F.cross_entropy(end, batch["end"].clamp(0, last))
        ) / 2

    def forward(self, model, batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (start [n], end [n]) per row, cut to the row's n real tokens."""
        start, end = (x.float().cpu() for x in self.logits(model, batch))
        lengths = batch["attention_mask"].sum(1).tolist()
        return [(start[i, :n], end[i, :n]) for i, n in enumerate(lengths)]

    def decode(self, outputs, features, examples) -> list[dict]:
        windows = defaultdict(list)  # example index -> [(feature, start logits, end logits)]
        rows = (row for batch in outputs for row in batch)
        for f, (start, end) in zip(features, rows):
            windows[f["example"]].append((f, start.numpy(), end.numpy()))
        return [self._predict(e, windows.get(i, [])) for i, e in enumerate(examples)]

    def _predict(self, example: dict, windows: list) -> dict:
        # Features arrive in the loop's length order: put windows back in doc order for the
        # max-context tie rule.
        windows = sorted(windows, key=lambda w: w[0]["window"][1])
        owner = max_context_owner([f["window"][1:] for f, _, _ in windows]) if windows else np.zeros(0, dtype=int)
        spans, null = [], math.inf  # spans: (score, char start, char end)
        for w, (f, start, end) in enumerate(windows):
            null = min(null, float(start[0] + end[0]))
            first, lo, hi = f["window"]
            s, t = start[first : first + hi - lo], end[first : first + hi - lo]  # [context tokens]
            # Only starts this window owns; masking before the top-k keeps n_best real candidates.
            a = _top(np.where(owner[lo:hi] == w, s, -np.inf), self.n_best)[:, None]
            b = _top(t, self.n_best)[None, :]
            ok = (b >= a) & (b - a < self.max_answer_length)  # [n_best, n_best] valid pairs
            for i, j in zip(*np.nonzero(ok)):
                k, m = a[i, 0], b[0, j]
                spans.append((float(s[k] + t[m]), f["offsets"][k][0], f["offsets"][m][1]))
        best: list[dict] = []
        seen: set[str] = set()
        for score, lo, hi in sorted(spans, key=lambda c: -c[0]):
            text = example["context"][lo:hi]
            if text not in seen:  # the n-best lists distinct answer texts
                seen.add(text)
                best.append({"text": text, "score": score, "start": lo, "end": hi})
            if len(best) == self.n_best:
                break
        null = null if math.isfinite(null) else 0.0
        nothing: dict = {"text": "", "score": null, "start": -1, "end": -1}
        if self.version == "2.0":  # an unfitted task (version None) answers, as 1.1
            best = sorted(best + [nothing], key=lambda c: -c["score"])[: self.n_best]
        top = best[0] if best else nothing
        scores = torch.tensor([c["score"] for c in best] or [null], dtype=torch.float64)
        probs = scores.softmax(0).tolist()
        return {
            "id": example["id"],
            "answer": top["text"],
            "start": top["start"],
            "end": top["end"],
            "score": round(top["score"], 6),
            "n_best": [
                {"text": c["text"], "score": round(c["score"], 6), "probability": round(p, 6)}
                for c, p in zip(best[:5], probs)
            ],
        }

    def metrics(self, predictions, examples) -> dict[str, float]:
        """Official SQuAD EM / F1 in percent (0-100, as evaluate-v1.1.py and bertkit.metrics.squad_report),
        with evaluate-v2.0.py's HasAns_* / NoAns_* split when some questions are unanswerable."""
        answers = {p["id"]: p["answer"] for p in predictions}

        def report(subset):
            qas = [{"id": e["id"], "answers": [{"text": a["text"]} for a in e["answers"]]} for e in subset]
            return squad_report(answers, [{"paragraphs": [{"qas": qas}]}])

        out = report(examples)
        if any(e["impossible"] for e in examples):
            for name, subset in (
                ("HasAns", [e for e in examples if e["answers"]]),
                ("NoAns", [e for e in examples if not e["answers"]]),
            ):
                if subset:
                    part = report(subset)
                    out.update({f"{name}_exact": part["exact_match"], f"{name}_f1": part["f1"]})
        return out

    def state(self) -> dict:
        return {
            "task": self.name,
            "doc_stride": self.doc_stride,
            "max_query_length": self.max_query_length,
            "max_answer_length": self.max_answer_length,
            "n_best": self.n_best,
            "version": self.version,
        }

"""The numbers BERT fine-tuning reports: GLUE classification and regression, CoNLL entities, SQuAD.

Inputs are plain sequences (lists, numpy arrays, CPU tensors); outputs are Python floats, ready for
JSON. Definitions follow the references the field compares against:
- classification: as scikit-learn (CoLA reports MCC; MRPC, QQP the positive class's F1); 0/0 is 0.
- regression (STS-B): Pearson; Spearman with ties at their average rank; a constant side gives 0.
- entities: seqeval in strict mode decides what an entity is, so a chunk counts only when it is well
  formed (conlleval.pl and seqeval's default mode also accept one that opens with `I-`).
- SQuAD: EM and F1 exactly as the official evaluate-v1.1.py, plus evaluate-v2.0.py's rule for
  unanswerable questions.
- generation: BLEU-4 and ROUGE-L, in `bertkit.generation_metrics` (they need the `generate` extra).
"""

from __future__ import annotations

import collections
import logging
import math
import re
import string

import numpy as np
from seqeval.scheme import IOB2, IOBES, Entities

from bertkit.errors import BertkitError

log = logging.getLogger(__name__)


def _as_list(values, name: str) -> list:
    """`values` as a Python list (tensors and arrays via `.tolist()`, so labels compare and hash)."""
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    if not out:
        raise BertkitError(f"`{name}` is empty: a metric needs at least one example")
    return out


def _pair(preds, golds) -> tuple[list, list]:
    """Both inputs as lists of the same, non-zero length."""
    preds, golds = _as_list(preds, "preds"), _as_list(golds, "golds")
    if len(preds) != len(golds):
        raise BertkitError(f"{len(preds)} predictions but {len(golds)} gold labels: pass one prediction per example")
    return preds, golds


def _f1(tp: int, n_pred: int, n_gold: int) -> float:
    """F1 = 2PR / (P + R) = 2tp / (n_pred + n_gold); 0 when nothing was predicted nor expected."""
    return 2.0 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0


# --- Classification (GLUE) ------------------------------------------------------------------------
def accuracy(preds, golds) -> float:
    """Fraction of examples whose prediction equals the gold label."""
    preds, golds = _pair(preds, golds)
    return sum(p == g for p, g in zip(preds, golds)) / len(golds)


def f1_binary(preds, golds, positive) -> float:
    """F1 of the `positive` class (MRPC, QQP): the other labels all count as negative."""
    preds, golds = _pair(preds, golds)
    tp = sum(p == positive and g == positive for p, g in zip(preds, golds))
    return _f1(tp, preds.count(positive), golds.count(positive))


def f1_macro(preds, golds, labels=None) -> float:
    """Unweighted mean of per-label F1 over `labels` (default: every label seen in golds or preds)."""
    preds, golds = _pair(preds, golds)
    labels = list(labels) if labels is not None else list(set(preds) | set(golds))
    if not labels:
        raise BertkitError("`labels` is empty: pass the label set, or None to use the labels seen")
    return sum(f1_binary(preds, golds, label) for label in labels) / len(labels)


def confusion_matrix(preds, golds, labels) -> np.ndarray:
    """Counts [len(labels), len(labels)]: row = gold label, column = predicted label."""
    preds, golds = _pair(preds, golds)
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(index), len(index)), dtype=np.int64)
    for i, (p, g) in enumerate(zip(preds, golds)):
        for name, value in (("prediction", p), ("gold label", g)):
            if value not in index:
                raise BertkitError(f"{name} {value!r} of example {i} is not in labels {labels}: add it to `labels`")
        matrix[index[g], index[p]] += 1
    return matrix


def matthews_corrcoef(preds, golds) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K, what CoLA reports).

    From the confusion matrix C: c = trace (correct), s = total, t_k = row sums (gold counts),
    p_k = column sums (predicted counts):
        MCC = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))
    With two classes this is (tp*tn - fp*fn) / sqrt(...). Predicting one class for everything makes
    the denominator 0; like scikit-learn we return 0 then."""
    preds, golds = _pair(preds, golds)
    labels = list(set(preds) | set(golds))  # MCC does not depend on their order
    cm = confusion_matrix(preds, golds, labels).astype(np.float64)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    denominator = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - p @ t) / denominator) if denominator else 0.0


def classification_report(preds, golds, labels) -> dict:
    """{"accuracy", "f1_macro", "mcc", "f1"}; "f1" is the F1 of `labels[1]` when there are exactly
    two labels (GLUE's convention: index 1 is the positive class), the macro F1 otherwise."""
    labels = list(labels)
    macro = f1_macro(preds, golds, labels)
    f1 = f1_binary(preds, golds, labels[1]) if len(labels) == 2 else macro
    return {"accuracy": accuracy(preds, golds), "f1_macro": macro, "mcc": matthews_corrcoef(preds, golds), "f1": f1}


# --- Regression (STS-B) ---------------------------------------------------------------------------
def _float_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(x, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def pearson(x, y) -> float:
    """Pearson's r. A constant side (a collapsed regression head) gives 0, not scipy's NaN: NaN would
    never compare better than anything when the loop picks the best checkpoint, and is not JSON."""
    x, y = _float_pair(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / denominator) if denominator else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span ([10, 20, 20] -> [1, 2.5, 2.5])."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Each run of equal values [start, end) gets rank (start + 1 + end) / 2.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the (tie-averaged) ranks."""
    x, y = _float_pair(x, y)
    return pearson(_average_ranks(x), _average_ranks(y))


def regression_report(preds, golds) -> dict:
    """{"pearson", "spearman", "mse"} for a regression head."""
    p, g = _float_pair(preds, golds)
    return {"pearson": pearson(p, g), "spearman": spearman(p, g), "mse": float(np.mean((p - g) ** 2))}


# --- Entities (CoNLL NER) -------------------------------------------------------------------------
_SCHEMES = {"BIO": "BI", "BIOES": "BIES"}  # allowed prefixes besides "O"


def _check_tags(seqs, scheme: str, name: str) -> list[list[str]]:
    """Validate every tag up front: seqeval answers a stray `PER` with `KeyError: 'P'`."""
    seqs = [list(seq) for seq in seqs]
    for s, seq in enumerate(seqs):
        for t, tag in enumerate(seq):
            if tag != "O" and not (len(tag) > 2 and tag[0] in _SCHEMES[scheme] and tag[1] == "-"):
                prefixes = ", ".join(f"{c}-TYPE" for c in _SCHEMES[scheme])
                hint = " (or pass scheme='BIOES')" if scheme == "BIO" else ""
                raise BertkitError(
                    f"{name}: sentence {s}, token {t} has tag {tag!r}, which is not a "
                    f"{scheme} tag: use O, {prefixes}{hint}"
                )
    return seqs


def entity_report(pred_tag_seqs, gold_tag_seqs, scheme: str = "BIO") -> dict:
    """Entity-level micro precision / recall / F1, and the same per entity type with its gold support.

    An entity is right only when its type, start and end all match. seqeval (strict mode, IOB2 or
    IOBES) extracts the entities; the counting is ours, so an empty class scores 0 without warnings.
    """
    if scheme not in _SCHEMES:
        raise BertkitError(f"unknown tagging scheme {scheme!r}: use one of {sorted(_SCHEMES)}")
    preds = _check_tags(_as_list(pred_tag_seqs, "pred_tag_seqs"), scheme, "predictions")
    golds = _check_tags(_as_list(gold_tag_seqs, "gold_tag_seqs"), scheme, "gold tags")
    if len(preds) != len(golds):
        raise BertkitError(f"{len(preds)} predicted sentences but {len(golds)} gold sentences")
    for i, (p, g) in enumerate(zip(preds, golds)):
        if len(p) != len(g):
            raise BertkitError(f"sentence {i}: {len(p)} predicted tags but {len(g)} gold tags")
    # Entities are (sentence, type, start, end) tuples; ill-formed chunks are dropped (strict mode).
    token_class = IOB2 if scheme == "BIO" else IOBES
    found, expected = Entities(preds, token_class), Entities(golds, token_class)
    per_type = {}
    for kind in sorted(found.unique_tags | expected.unique_tags):
        gold_set = expected.filter(kind)
        per_type[kind] = {**_prf(found.filter(kind), gold_set), "support": len(gold_set)}
    all_found = {entity for sentence in found.entities for entity in sentence}
    all_expected = {entity for sentence in expected.entities for entity in sentence}
    return {**_prf(all_found, all_expected), "per_type": per_type}


def _prf(found: set, expected: set) -> dict:
    tp = len(found & expected)
    return {
        "precision": tp / len(found) if found else 0.0,
        "recall": tp / len(expected) if expected else 0.0,
        "f1": _f1(tp, len(found), len(expected)),
    }


# --- SQuAD (official evaluate-v1.1.py, with evaluate-v2.0.py's rule for unanswerable questions) ---
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    In the official order: punctuation goes first, so "the-end" -> "theend" keeps its "the". Only
    `string.punctuation` goes: curly quotes and dashes stay."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of the normalised strings, as bags of words (a repeat counts as often as
    it is shared). As in the official v1.1 script, no shared token is 0, even if both are ""."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_ground_truths(metric, prediction: str, ground_truths) -> float:
    """Best score of `prediction` against any of the annotators' answers."""
    return max(metric(prediction, truth) for truth in ground_truths)


def squad_report(predictions: dict, dataset) -> dict:
    """{"exact_match", "f1"} in percent over every question of `dataset`, as the official scripts.

    `dataset` is SQuAD's parsed JSON or its `data` list. A question missing from `predictions` scores 0
    (and is logged). A question with no gold answer (SQuAD 2.0) scores 1 on both metrics exactly when
    the prediction normalises to "", as evaluate-v2.0.py does; answered questions follow v1.1.
    """
    articles = dataset["data"] if isinstance(dataset, dict) else dataset
    total, em, f1 = 0, 0.0, 0.0
    missing = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    missing.append(qa["id"])
                    continue
                prediction = predictions[qa["id"]]
                golds = [answer["text"] for answer in qa["answers"]]
                if not golds:  # unanswerable: "" is the only right answer, on both metrics
                    score = float(normalize_answer(prediction) == "")
                    em, f1 = em + score, f1 + score
                    continue
                em += max_over_ground_truths(exact_match, prediction, golds)
                f1 += max_over_ground_truths(f1_score, prediction, golds)
    if not total:
        raise BertkitError("the SQuAD dataset has no questions: pass the JSON with its `data` list")
    if missing:
        log.warning("%d of %d questions have no prediction and score 0 (first: %s)", len(missing), total, missing[0])
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


# --- Plot -----------------------------------------------------------------------------------------
def plot_confusion_matrix(matrix, labels, path) -> None:
    """Write the matrix as a PNG heat map with counts in the cells, gold down, predicted across.
    Draws on the Agg canvas directly (no pyplot): works headless and leaves pyplot's state alone."""
    # matplotlib takes about a second to import: only when a figure is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # (deferred with the line above)

    matrix, labels = np.asarray(matrix), [str(label) for label in labels]
    if matrix.shape != (len(labels), len(labels)):
        raise BertkitError(f"matrix has shape {matrix.shape} but there are {len(labels)} labels")
    size = 1.5 + 0.6 * len(labels)  # inches: grows with the number of labels
    fig = Figure(figsize=(size + 1, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.colorbar(ax.imshow(matrix, cmap="Blues"), ax=ax)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="gold")
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    for (i, j), count in np.ndenumerate(matrix):  # light text on the dark half of the colour scale
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, format="png")

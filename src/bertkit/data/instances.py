"""Training sequences from tokenized documents: NSP pairs (BERT) or packed full sentences (RoBERTa).

A document is a list of sentences; a sentence is (ids, word_starts) with no special tokens. Every
function takes the random stream `rng` so that a build is reproducible from its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Sentence = tuple[list[int], list[bool]]  # (token ids, word starts), one entry per token


@dataclass
class Instance:
    """One sequence before masking. For NSP: [CLS] A [SEP] B [SEP]."""

    ids: list[int]
    type_ids: list[int]  # 0 for [CLS] A [SEP], 1 for B [SEP]; all 0 without NSP
    starts: list[bool]  # word starts, for whole-word masking
    nsp_label: int  # 0: B is A's continuation (IsNext), 1: B is from another document; -1 without NSP
    truncated: bool  # A + B were longer than the sequence and lost tokens


def nsp_instances(
    documents: list[list[Sentence]],
    doc_index: int,
    max_seq_length: int,
    short_seq_prob: float,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[Instance]:
    """google-research/bert's create_instances_from_document.

    Sentences are collected until they fill a target length; a random split point makes A, and B is
    the rest of the collected sentences (IsNext) or, half of the time, text from a random other
    document (NotNext). Pairs cross documents on purpose: that is what makes the NotNext examples, and
    the sentences a NotNext pair did not use are put back, so no text is wasted. A one-sentence
    document (or the last lone sentence of one) has no continuation, so its B is always random, as in
    google-research: on corpora of many one-line documents the NotNext share is above one half.

    With probability `short_seq_prob` the target is a random length in [2, max]: pretraining
    mostly uses full sequences, and these short ones keep the model used to the short inputs of
    fine-tuning. google-research draws the target once per document; here it is drawn for every
    instance, so that the share of short targets is `short_seq_prob` of instances whatever the
    document lengths.
    """
    document = documents[doc_index]
    max_tokens = max_seq_length - 3  # room for [CLS], [SEP], [SEP]

    def draw_target() -> int:
        return rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens

    target = draw_target()
    out: list[Instance] = []
    chunk: list[Sentence] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i][0])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = _concat(chunk[:a_end])
            if len(chunk) == 1 or rng.random() < 0.5:
                label = 1
                b = _random_continuation(documents, doc_index, target - len(a[0]), rng)
                i -= len(chunk) - a_end  # put the unused sentences back
            else:
                label = 0
                b = _concat(chunk[a_end:])
            truncated = _truncate_pair(a, b, max_tokens, rng)
            out.append(
                Instance(
                    ids=[cls_id, *a[0], sep_id, *b[0], sep_id],
                    type_ids=[0] * (len(a[0]) + 2) + [1] * (len(b[0]) + 1),
                    starts=[True, *a[1], True, *b[1], True],
                    nsp_label=label,
                    truncated=truncated,
                )
            )
            chunk, length = [], 0
            target = draw_target()
        i += 1
    return out


def _random_continuation(documents, doc_index: int, target: int, rng: random.Random) -> Sentence:
    """Sentences from a random start in another document until `target` tokens (at least one sentence).
    Ten tries to draw a document other than `doc_index`, as google-research: a chunk of one document
    then pairs it with itself rather than looping forever."""
    for _ in range(10):
        other = rng.randint(0, len(documents) - 1)
        if other != doc_index:
            break
    document = documents[other]
    sentences = []
    length = 0
    for sentence in document[rng.randint(0, len(document) - 1) :]:
        sentences.append(sentence)
        length += len(sentence[0])
        if length >= target:
            break
    return _concat(sentences)


def _concat(sentences: list[Sentence]) -> Sentence:
    ids: list[int] = []
    starts: list[bool] = []
    for s_ids, s_starts in sentences:
        ids += s_ids
        starts += s_starts
    return ids, starts


def _truncate_pair(a: Sentence, b: Sentence, max_tokens: int, rng: random.Random) -> bool:
    """google-research's truncate_seq_pair, in place: drop a token from the longer segment until the pair
    fits, from its front or back at random (always cutting the end would bias toward sentence
    starts). A segment cut at the front starts a word wherever the cut lands. True if anything went."""
    truncated = False
    while len(a[0]) + len(b[0]) > max_tokens:
        ids, starts = a if len(a[0]) > len(b[0]) else b
        assert len(ids) >= 1
        truncated = True
        if rng.random() < 0.5:
            del ids[0], starts[0]
            if starts:
                starts[0] = True
        else:
            ids.pop()
            starts.pop()
    return truncated


def packed_instances(documents: list[list[Sentence]], max_seq_length: int, cls_id: int, sep_id: int) -> list[Instance]:
    """RoBERTa's FULL-SENTENCES: [CLS] s1 s2 ... [SEP], contiguous sentences packed up to the length.

    Without NSP there is no reason to stop at a document's end, and a full sequence wastes no compute
    on padding, so a sequence runs on into the next document with a [SEP] between the two (RoBERTa
    §4.2). One segment: token types are all 0. Sentences must already be at most max_seq_length - 2.
    """
    budget = max_seq_length - 2  # room for [CLS] and the final [SEP]
    out: list[Instance] = []
    ids: list[int] = []
    starts: list[bool] = []

    def emit():
        out.append(Instance([cls_id, *ids, sep_id], [0] * (len(ids) + 2), [True, *starts, True], -1, False))

    for document in documents:
        for k, (s_ids, s_starts) in enumerate(document):
            separator = k == 0 and bool(ids)  # a new document after some text
            if ids and len(ids) + separator + len(s_ids) > budget:
                emit()
                ids, starts, separator = [], [], False
            if separator:
                ids.append(sep_id)
                starts.append(True)
            ids += s_ids
            starts += s_starts
    if ids:
        emit()
    return out

"""Masked-LM masking, and the word boundaries whole-word masking groups tokens by.

`mask_tokens` is google-research/bert's create_masked_lm_predictions as a pure function: the same code
masks once at build time (static) and again every epoch at load time (dynamic, RoBERTa), with the
randomness passed in.

Whole-word masking needs to know where words start. English: a WordPiece not starting with `##` starts
a word. Chinese: BERT splits CJK text into single characters, so `##` says nothing; following
Chinese-BERT-wwm (Cui et al. 2019) the words come from a segmenter (jieba here) run on the original
sentence, and the characters of one word are masked together. The tokens stay single characters; only
the grouping comes from jieba.
"""

from __future__ import annotations

import logging
import random

import numpy as np

WHOLE_WORD_MODES = ("auto", "none", "wordpiece", "jieba")


def mask_tokens(
    ids: list[int],
    word_starts: list[bool],
    vocab_size: int,
    special_ids: set[int],
    rng: random.Random | np.random.Generator,
    masked_lm_prob: float = 0.15,
    max_predictions: int = 20,
    *,
    mask_id: int,
) -> tuple[list[int], list[int], list[int]]:
    """Mask a sequence for the MLM loss: (masked ids, masked positions (ascending), original ids there).

    Candidates are the tokens not in `special_ids` ([CLS], [SEP], [PAD], ... are never masked), grouped
    into words: a token starts a word when `word_starts` says so or when a special token precedes it
    (a segment cut by truncation may begin with a `##` piece). round(masked_lm_prob * candidates)
    positions are masked, at least 1 and at most `max_predictions`, by taking whole words in random
    order and skipping a word that would overshoot the count (as google-research does).
    Each chosen position becomes [MASK] 80% of the time, a random token 10% and stays itself 10%: the
    model must then keep a good representation of every input token, since it cannot tell which
    unmasked-looking ones it will be asked about, while [MASK] (never seen at fine-tuning) stays rare.
    The random token is drawn uniformly from the vocab, never a special one.
    """
    words: list[list[int]] = []
    after_special = True
    for i, (token, start) in enumerate(zip(ids, word_starts)):
        if token in special_ids:
            after_special = True
            continue
        if start or after_special:
            words.append([i])
        else:
            words[-1].append(i)
        after_special = False
    n_candidates = sum(map(len, words))
    if n_candidates == 0:
        return list(ids), [], []
    # int(round()) as in google-research; Python rounds halves to even.
    n_predict = min(max_predictions, max(1, int(round(n_candidates * masked_lm_prob))))
    # A random order of the words: sorting by random keys is a uniform permutation, and several times
    # faster than random.shuffle, which draws a bounded integer per element in Python.
    words.sort(key=lambda _: rng.random())
    chosen: list[int] = []
    for word in words:
        if len(chosen) >= n_predict:
            break
        if len(chosen) + len(word) > n_predict:
            continue
        chosen += word
    chosen.sort()
    masked = list(ids)
    for i in chosen:
        r = rng.random()
        if r < 0.8:
            masked[i] = mask_id
        elif r < 0.9:
            masked[i] = _random_token(rng, vocab_size, special_ids)
        # else: left unchanged, but still predicted
    return masked, chosen, [ids[i] for i in chosen]


def _random_token(rng, vocab_size: int, special_ids: set[int]) -> int:
    while True:
        token = rng.randrange(vocab_size) if isinstance(rng, random.Random) else int(rng.integers(vocab_size))
        if token not in special_ids:
            return token


def wordpiece_starts(ids: list[int], is_continuation: np.ndarray) -> list[bool]:
    """Word starts for English whole-word masking: every token that is not a `##` piece.
    `is_continuation` is a bool array over the vocab (see `continuation_table`)."""
    return (~is_continuation[np.asarray(ids, dtype=np.int64)]).tolist()


def continuation_table(vocab: dict[str, int]) -> np.ndarray:
    """[vocab_size] bool: True for the `##` pieces."""
    table = np.zeros(len(vocab), dtype=bool)
    for token, i in vocab.items():
        table[i] = token.startswith("##")
    return table


def jieba_starts(text: str, offsets: list[tuple[int, int]], is_continuation: list[bool]) -> list[bool]:
    """Word starts for Chinese whole-word masking from jieba's segmentation of `text`.

    `offsets` are the tokens' character spans in `text` (from the tokenizer), `is_continuation` says
    which tokens are `##` pieces. A token starts a word unless it is a `##` piece or it begins inside
    the same jieba word as the token before it: for jieba's 北京|天安门 the tokens 北 京 天 安 门 get
    starts True False True False False.
    """
    word_of = [0] * (len(text) + 1)
    for k, (_, start, end) in enumerate(_jieba().tokenize(text)):
        word_of[start:end] = [k] * (end - start)
    word_of[len(text)] = -1
    starts, previous = [], None
    for (start, _), cont in zip(offsets, is_continuation):
        word = word_of[min(start, len(text))]
        starts.append(not cont and word != previous)
        previous = word
    return starts


_JIEBA = None


def _jieba():
    """jieba, imported on first use with its start-up chatter silenced (it loads a 20 MB dictionary)."""
    global _JIEBA
    if _JIEBA is None:
        import jieba  # loads its dictionary on import (about a second): only for Chinese whole-word masking

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _JIEBA = jieba
    return _JIEBA

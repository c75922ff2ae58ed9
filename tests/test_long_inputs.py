"""Inputs longer than max_length are windowed over their whole length, or cut with a counted warning:
never silently reduced to their first 512 tokens."""

from __future__ import annotations

import logging

import torch
from helpers import tiny_config

from bertkit.inference import predict
from bertkit.tasks.classify import ClassifyTask, RegressionTask
from bertkit.tasks.qa import QATask

HEAD = "the film opens on a quiet street " * 75  # 600 word pieces
BAD_TAIL = "awful terrible boring " * 200
GOOD_TAIL = "wonderful moving brilliant " * 200


def _example(text, text_b=None, label="pos"):
    return {"text": text, "text_b": text_b, "label": label, "line": 2, "source": "t.tsv"}


def test_windows_reach_the_end_of_a_5000_token_text(en):
    text = "alpha beta gamma delta epsilon " * 1000 + "zebra"  # 5,001 pieces
    ids = en.encode(text, max_length=None, add_special_tokens=False).ids
    assert len(ids) > 5000
    task = ClassifyTask(labels=["neg", "pos"])
    features = task.featurize([_example(text)], en, max_length=128)
    covered = set()
    for f in features:
        assert len(f["input_ids"]) <= 128
        covered.update(f["input_ids"][1:-1])
    assert features[-1]["input_ids"][-2] == ids[-1]  # the last window ends with the text's last token
    assert len(features) >= 5000 // 126
    assert task.windowed == 1
    assert en.vocab["zebra"] in covered


def test_pairs_window_the_second_text_to_its_end(en):
    task = ClassifyTask(labels=["neg", "pos"])
    features = task.featurize([_example("is it good?", HEAD + "zebra")], en, max_length=64)
    assert features[-1]["input_ids"][-2] == en.vocab["zebra"]


def test_opposite_tails_give_different_predictions(en):
    """Two texts that share their first 600 tokens and differ after them are not scored alike."""
    torch.manual_seed(0)
    config = tiny_config(en.vocab_size)
    for task in (ClassifyTask(labels=["neg", "pos"]), RegressionTask()):
        model = task.build_model(config).eval()
        examples = [_example(HEAD + BAD_TAIL, label=None), _example(HEAD + GOOD_TAIL, label=None)]
        features = task.featurize(examples, en, max_length=128)
        bad, good = predict(model, task, features, examples, batch_size=8, pad_id=en.pad_id)
        assert bad != good


def test_qa_says_how_many_questions_were_cut(en, caplog):
    task = QATask(max_query_length=8)
    examples = [
        {
            "id": "1",
            "question": "what " * 20 + "?",
            "context": "the answer is here .",
            "answers": [],
            "source": "d.json",
            "line": "question 1",
            "is_impossible": False,
        }
    ]
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        task.featurize(examples, en, max_length=64)
    assert "1 of 1 questions are longer than max_query_length=8" in caplog.text

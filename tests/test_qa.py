"""Extractive QA: reading SQuAD, windows with doc stride, span decoding and SQuAD EM/F1 as worked examples."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.inference import predict
from bertkit.metrics import normalize_answer
from bertkit.model import BertConfig
from bertkit.tasks.qa import QATask, doc_windows, max_context_owner
from bertkit.tokenizer import BertTokenizer

BRIDGE = (
    "The river rises in the northern hills. " * 3
    + "The old stone bridge was built in 1742 by the monks of Saint Gall. "
    + "Boats carry grain and timber to the coast. " * 3
)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return BertTokenizer.from_dir(minilm_dir)


def example(question, context, answer=None, qid="q", impossible=False):
    answers = [{"text": answer, "start": context.index(answer)}] if answer else []
    return {
        "id": qid,
        "question": question,
        "context": context,
        "answers": answers,
        "impossible": impossible,
        "line": f"question {qid}",
        "source": "test",
    }


def squad_file(tmp_path, data, name="squad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def one_question(**qa):
    """A one-article SQuAD dict whose only question has the given fields."""
    context = "Denver Broncos defeated the Carolina Panthers."
    base = {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]}
    return {"data": [{"title": "Tiny", "paragraphs": [{"context": context, "qas": [{**base, **qa}]}]}]}


# --- Reading ------------------------------------------------------------------------------------------
def test_reads_official_squad11(squad11_dir):
    task = QATask()
    dev, train = task.read(squad11_dir / "dev.json"), task.read(squad11_dir / "train.json")
    assert (len(dev), len(train)) == (10570, 87599)
    first = dev[0]
    assert first["id"] == "56be4db0acb8001400a502ec"
    assert first["answers"] == [{"text": "Denver Broncos", "start": 177}] * 3
    assert first["context"][177:191] == "Denver Broncos"
    assert first["line"] == "article 0 ('Super_Bowl_50'), paragraph 0, question 56be4db0acb8001400a502ec"
    assert sum(len(e["answers"]) for e in train) == 87599  # one answer per training question
    task.fit(train)
    assert task.version == "1.1"


def test_reads_v2_and_jsonl(tmp_path):
    data = one_question()
    data["data"][0]["paragraphs"][0]["qas"].append(
        {
            "id": "q2",
            "question": "Who lost?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "Carolina Panthers", "answer_start": 28}],
        }
    )
    task = QATask()
    examples = task.read(squad_file(tmp_path, data))
    assert [(e["id"], e["impossible"], e["answers"]) for e in examples] == [
        ("q1", False, [{"text": "Denver Broncos", "start": 0}]),
        ("q2", True, []),
    ]
    task.fit(examples)
    assert task.version == "2.0"
    # Inputs for `predict`: one question a line, id and answers optional.
    lines = [{"question": "Who won?", "context": "Denver won."}, {"id": 7, "question": "Q?", "context": "C."}]
    path = squad_file(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n", "in.jsonl")
    inputs = task.read_inputs(path)
    assert [(e["id"], e["line"], e["answers"]) for e in inputs] == [("line-1", "line 1", []), ("7", "line 2", [])]


def test_answer_offsets_are_checked(tmp_path):
    path = squad_file(tmp_path, one_question(answers=[{"text": "Carolina Panthers", "answer_start": 20}]))
    with pytest.raises(BertkitError) as e:
        QATask().read(path)
    message = str(e.value)
    for part in (
        "squad.json",
        "article 0 ('Tiny'), paragraph 0, question q1, answer 0",
        "context[20:37] is 'ted the Carolina ",
        "the text occurs at answer_start=28",
        "fix answer_start",
    ):
        assert part in message


def without(key):
    """one_question() whose question lacks `key`."""
    data = one_question()
    del data["data"][0]["paragraphs"][0]["qas"][0][key]
    return data


@pytest.mark.parametrize(
    "data, where, fix",
    [
        ("", "is empty", '{"data": [{"title"'),
        (
            "{not json",
            "not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)",
            "name the file .jsonl",
        ),
        ({"data": []}, "holds no questions", "expected SQuAD JSON"),
        ({"version": "1.1"}, "no `data` list at the top", "expected SQuAD JSON"),
        ({"data": [{"title": "Tiny"}]}, "article 0 ('Tiny'): missing `paragraphs` (found: title)", "add it"),
        (
            {"data": [{"title": "Tiny", "paragraphs": [{"qas": []}]}]},
            "article 0 ('Tiny'), paragraph 0: missing `context` (found: qas)",
            "add it",
        ),
        (
            without("id"),
            "article 0 ('Tiny'), paragraph 0, question #0: not an object with an `id`",
            "give every question a unique id",
        ),
        (without("answers"), "question q1: missing `answers` (found: id, question, context)", "add it"),
        (one_question(question=None), "question q1: `question` should be a str, got NoneType", "fix it"),
        (one_question(question=" "), "question q1: empty `question`", "give the text"),
        (one_question(answers=[]), "question q1: no answers", '"is_impossible": true'),
        (one_question(answers=[{"text": "Denver"}]), "question q1, answer 0: missing `answer_start`", "add it"),
        (one_question(is_impossible=True), "question q1: marked is_impossible but has answers", "plausible_answers"),
    ],
)
def test_bad_input_names_file_record_and_fix(tmp_path, data, where, fix):
    with pytest.raises(BertkitError) as e:
        QATask().read(squad_file(tmp_path, data))
    assert "squad.json" in str(e.value)
    assert where in str(e.value)
    assert fix in str(e.value)


def test_duplicate_ids_and_bad_jsonl(tmp_path):
    data = one_question()
    data["data"][0]["paragraphs"][0]["qas"] *= 2
    with pytest.raises(
        BertkitError,
        match=r"paragraph 0, question q1: question id 'q1' was already used by "
        r"article 0 \('Tiny'\), paragraph 0, question q1; .*its own",
    ):
        QATask().read(squad_file(tmp_path, data))
    path = squad_file(tmp_path, '{"question": "Q?", "context": "C."}\n{"question": "Q?"}\n', "in.jsonl")
    with pytest.raises(BertkitError, match=r"in.jsonl, line 2: missing `context` \(found: id, question\); add it"):
        QATask().read_inputs(path)


# --- Windows ------------------------------------------------------------------------------------------
def test_doc_windows_start_every_stride_tokens():
    assert doc_windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert doc_windows(9, 4, 3) == [(0, 4), (3, 7), (6, 9)]  # the last window may be short (run_squad.py)
    assert doc_windows(9, 4, 8) == [(0, 4), (4, 8), (8, 9)]  # a stride past the window would skip tokens
    assert doc_windows(3, 4, 2) == [(0, 3)]
    assert doc_windows(0, 4, 2) == [(0, 0)]


def test_long_context_windows(tokenizer, caplog):
    """66 context tokens, a 6-token question, max_length 48: 39 context tokens a window, a new
    window every 16 tokens. "1742" is context token 31: inside windows 0 and 1, not 2."""
    task = QATask(doc_stride=16, max_query_length=16)
    e = example("When was the bridge built?", BRIDGE, "1742")
    with caplog.at_level(logging.INFO, logger="bertkit"):
        features = task.featurize([e, example("Who built it?", BRIDGE, "the monks of Saint Gall")], tokenizer, 48)
    assert task.windowed == 2
    assert "qa: 2 of 2 questions have contexts longer than max_length=48 allows" in caplog.text
    question = tokenizer.tokenize(e["question"])
    context = tokenizer.encode(BRIDGE, max_length=None).ids[1:-1]
    assert (len(question), len(context)) == (6, 66)
    first = [f for f in features if f["example"] == 0]
    assert [f["window"] for f in first] == [(8, 0, 39), (8, 16, 55), (8, 32, 66)]
    covered = set()
    for f in first:
        _, lo, hi = f["window"]
        assert f["input_ids"] == [tokenizer.cls_id] + tokenizer.encode(e["question"]).ids[1:] + context[lo:hi] + [
            tokenizer.sep_id
        ]
        assert f["token_type_ids"] == [0] * 8 + [1] * (hi - lo + 1)
        assert len(f["input_ids"]) <= 48 and len(f["offsets"]) == hi - lo
        covered |= set(range(lo, hi))
    assert covered == set(range(66))  # nothing cut
    assert [(f["start"], f["end"]) for f in first] == [(39, 39), (23, 23), (0, 0)]
    for f in features:
        if f["start"]:
            gold = e["answers"][0]["text"] if f["example"] == 0 else "the monks of Saint Gall"
            assert normalize_answer(tokenizer.decode(f["input_ids"][f["start"] : f["end"] + 1])) == normalize_answer(
                gold
            )
            k = f["window"][0]
            assert BRIDGE[f["offsets"][f["start"] - k][0] : f["offsets"][f["end"] - k][1]] == gold


def test_featurize_squad_train_labels(squad11_dir, tokenizer):
    """The first 2,000 training questions at max_length 384: every answer's labelled span, sliced from
    the context with the offsets, normalises to the gold answer except 7 whose answer cuts a word
    (gold 'six' inside 'sixth', '7' inside '1817', ...)."""
    examples = QATask().read(squad11_dir / "train.json")[:2000]
    features = QATask().featurize(examples, tokenizer, 384)
    assert len(features) == 2054
    wrong = []
    for f in features:
        if f["start"]:
            e, k = examples[f["example"]], f["window"][0]
            text = e["context"][f["offsets"][f["start"] - k][0] : f["offsets"][f["end"] - k][1]]
            if normalize_answer(text) != normalize_answer(e["answers"][0]["text"]):
                wrong.append((text, e["answers"][0]["text"]))
    assert len({f["example"] for f in features if f["start"]}) == 2000  # every answer is labelled somewhere
    assert len(wrong) == 7  # 1993 of 2000 (99.65%) right
    assert ("sixth", "six") in wrong and ("1817", "7") in wrong


# --- Decoding -----------------------------------------------------------------------------------------
def logits(feature, starts=(), ends=(), null=(0.0, 0.0)):
    """Start/end logits for one feature: -10 everywhere, [CLS] = null, given (input position, value)s."""
    n = len(feature["input_ids"])
    s, e = torch.full((n,), -10.0), torch.full((n,), -10.0)
    s[0], e[0] = null
    for i, v in starts:
        s[i] = v
    for i, v in ends:
        e[i] = v
    return s, e


def context_position(feature, text, context):
    """Input position of the context token starting at `text` (its first occurrence)."""
    char = context.index(text)
    return feature["window"][0] + [a for a, _ in feature["offsets"]].index(char)


def test_decode_exact_char_offsets_accents_and_chinese(tokenizer):
    context = "Le Crème brûlée de 北京大学 est célèbre."
    e = example("Quoi?", context)
    task = QATask(max_answer_length=5)
    (f,) = task.featurize([e], tokenizer, 64)
    assert tokenizer.convert_ids_to_tokens(f["input_ids"][f["window"][0] : -1]) == [
        "le",
        "cr",
        "##eme",
        "br",
        "##ule",
        "##e",
        "de",
        "北",
        "京",
        "大",
        "学",
        "est",
        "ce",
        "##le",
        "##bre",
        ".",
    ]
    at = lambda t: context_position(f, t, context)  # noqa: E731
    out = task.decode([[logits(f, [(at("Crème"), 5.0)], [(at("brûlée") + 2, 4.0)])]], [f], [e])[0]
    assert (out["answer"], out["start"], out["end"], out["score"]) == ("Crème brûlée", 3, 15, 9.0)
    out = task.decode([[logits(f, [(at("北"), 5.0)], [(at("学"), 4.0)])]], [f], [e])[0]
    assert (out["answer"], out["start"], out["end"]) == ("北京大学", 19, 23)
    # "北京大学 est célèbre" is 8 tokens > max_answer_length=5: the end falls back to the best in reach
    out = task.decode([[logits(f, [(at("北"), 5.0)], [(at("célèbre") + 2, 9.0), (at("京"), 1.0)])]], [f], [e])[0]
    assert (out["answer"], out["score"]) == ("北京", 6.0)


def test_decode_never_ends_before_start(tokenizer):
    context = "one two three four five six"
    task = QATask()
    (f,) = task.featurize([example("Q?", context)], tokenizer, 64)
    at = lambda t: context_position(f, t, context)  # noqa: E731
    # The best start ("five", 5) and the best end ("two", 4) are reversed and never paired; the best
    # valid spans are one..two = 2 + 4 and five..five = 5 + 0.5.
    s, e = logits(f, [(at("five"), 5.0), (at("one"), 2.0)], [(at("two"), 4.0), (at("five"), 0.5)])
    out = task.decode([[(s, e)]], [f], [example("Q?", context)])[0]
    assert (out["answer"], out["score"]) == ("one two", 6.0)
    assert [(c["text"], c["score"]) for c in out["n_best"]][:2] == [("one two", 6.0), ("five", 5.5)]
    assert all(c["probability"] > 0 for c in out["n_best"]) and sum(c["probability"] for c in out["n_best"]) <= 1


def test_decode_max_context_rule(tokenizer):
    """ "1742" (context token 31) is in window 0 = tokens [0, 39), 7 tokens from its right edge, and in
    window 1 = [16, 55), 15 from its left edge: window 1 scores it, window 0's huge logits are unused."""
    task = QATask(doc_stride=16, max_query_length=16)
    e = example("When?", BRIDGE)
    features = task.featurize([e], tokenizer, 48)
    assert max_context_owner([(0, 39), (16, 55), (32, 66)])[31] == 1
    assert max_context_owner([(0, 4), (2, 6)]).tolist() == [0, 0, 0, 1, 1, 1]
    w0, w1, w2 = features
    k0, k1 = w0["window"][0], w1["window"][0] - 16  # input position of doc token d: k + d
    outputs = {
        0: logits(w0, [(k0 + 31, 10.0)], [(k0 + 31, 10.0)]),  # "1742"
        1: logits(w1, [(k1 + 31, 1.0), (k1 + 33, 2.0)], [(k1 + 31, 1.0), (k1 + 34, 2.0)]),  # "the monks"
        2: logits(w2),
    }
    # the loop hands features over in its own (length) order: window 2 is the shortest and comes last
    for order in ([1, 0, 2], [2, 1, 0]):
        out = task.decode([[outputs[i] for i in order]], [features[i] for i in order], [e])[0]
        assert (out["answer"], out["score"]) == ("the monks", 4.0)
        assert "1742" in [c["text"] for c in out["n_best"]]  # scored 1 + 1 from window 1


def test_decode_v2_null_answer(tokenizer):
    context = "Denver Broncos defeated the Carolina Panthers."
    e = example("Who lost?", context)
    task = QATask(version="2.0")
    (f,) = task.featurize([e], tokenizer, 64)
    at = lambda t: context_position(f, t, context)  # noqa: E731
    span = ([(at("Carolina"), 2.0)], [(at("Panthers"), 2.0)])
    out = task.decode([[logits(f, *span, null=(3.0, 2.0))]], [f], [e])[0]  # null 5 > span 4
    assert (out["answer"], out["start"], out["end"], out["score"]) == ("", -1, -1, 5.0)
    assert [c["text"] for c in out["n_best"]][:2] == ["", "Carolina Panthers"]
    out = task.decode([[logits(f, *span, null=(2.0, 1.0))]], [f], [e])[0]  # null 3 < span 4
    assert (out["answer"], out["start"], out["end"]) == ("Carolina Panthers", 28, 45)
    out = task.decode([[logits(f, *span, null=(2.0, 2.0))]], [f], [e])[0]  # a tie keeps the span
    assert out["answer"] == "Carolina Panthers"
    v1 = QATask(version="1.1")  # SQuAD 1.1 always answers
    assert v1.decode([[logits(f, *span, null=(9.0, 9.0))]], [f], [e])[0]["answer"] == "Carolina Panthers"


def test_decode_v2_null_is_min_over_windows(tokenizer):
    task = QATask(doc_stride=16, max_query_length=16, version="2.0")
    e = example("When?", BRIDGE)
    w0, w1, w2 = task.featurize([e], tokenizer, 48)
    k = w1["window"][0] + 15  # "1742" in its max-context window
    outputs = [
        logits(w0, null=(5.0, 5.0)),
        logits(w1, [(k, 2.0)], [(k, 2.0)], null=(1.0, 1.0)),
        logits(w2, null=(9.0, 9.0)),
    ]
    out = task.decode([outputs], [w0, w1, w2], [e])[0]
    assert (out["answer"], out["score"]) == ("1742", 4.0)  # null = min(10, 2, 18) = 2 < 4


# --- Metrics ------------------------------------------------------------------------------------------
def test_official_em_f1():
    examples = [
        example("Who won?", "Denver Broncos won.", "Denver Broncos", "a"),
        {
            **example("Who lost?", "Carolina Panthers lost.", "Carolina Panthers", "b"),
            "answers": [{"text": "Carolina Panthers", "start": 0}, {"text": "the Panthers", "start": 0}],
        },
    ]
    predictions = [{"id": "a", "answer": "the Broncos"}, {"id": "b", "answer": "Panthers"}]
    # a: EM 0, F1 of {broncos} vs {denver, broncos} = 2 * 1 * 0.5 / 1.5 = 2/3; b: "panthers" == "panthers"
    assert QATask().metrics(predictions, examples) == pytest.approx({"exact_match": 50.0, "f1": 250 / 3})
    v2 = examples + [example("Q?", "C.", qid="c", impossible=True), example("Q?", "C.", qid="d", impossible=True)]
    predictions += [{"id": "c", "answer": ""}, {"id": "d", "answer": "C"}]
    assert QATask().metrics(predictions, v2) == pytest.approx(
        {
            "exact_match": 50.0,
            "f1": (2 / 3 + 1 + 1) * 25,
            "HasAns_exact": 50.0,
            "HasAns_f1": 250 / 3,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
        }
    )


def test_state_round_trip():
    task = QATask(doc_stride=64, n_best=10, version="2.0")
    state = task.state()
    assert state == {
        "task": "qa",
        "doc_stride": 64,
        "max_query_length": 64,
        "max_answer_length": 30,
        "n_best": 10,
        "version": "2.0",
    }
    assert QATask(labels=None, **{k: v for k, v in state.items() if k != "task"}).state() == state
    with pytest.raises(BertkitError, match="version '3' is not a SQuAD version"):
        QATask(version="3")


# --- Training -----------------------------------------------------------------------------------------
def test_tiny_model_overfits_four_questions(tokenizer):
    """A random tiny BERT learns 4 answers in 60 steps; the loop's predict then decodes them exactly."""
    contexts = [
        "Paris is the capital of France.",
        "The Nile flows north through Egypt.",
        "Mozart was born in Salzburg in 1756.",
        "Water boils at 100 degrees Celsius.",
    ]
    examples = [
        example("What is the capital?", contexts[0], "Paris", "a"),
        example("Where does it flow?", contexts[1], "north", "b"),
        example("When was he born?", contexts[2], "1756", "c"),
        example("At what temperature?", contexts[3], "100 degrees Celsius", "d"),
    ]
    task = QATask()
    features = task.featurize(examples, tokenizer, 32)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = task.build_model(config)
    from bertkit.data.collate import collate

    batch = collate(features)
    assert batch["start"].tolist() == [f["start"] for f in features] and "offsets" not in batch
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    # Near-zero logits at random init: each row's loss is ln(its length), padding excluded.
    assert losses[0] == pytest.approx(sum(math.log(len(f["input_ids"])) for f in features) / 4, abs=0.1)
    assert losses[-1] < 0.1 * losses[0]
    predictions = predict(model, task, features, examples, batch_size=3)
    assert [p["answer"] for p in predictions] == ["Paris", "north", "1756", "100 degrees Celsius"]
    assert task.metrics(predictions, examples) == {"exact_match": 100.0, "f1": 100.0}

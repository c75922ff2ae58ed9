"""Every data reader on random files: it returns examples or raises a BertkitError naming the file;
any other exception is a bug (the CLI would print a traceback instead of a one-line fix).

Three kinds of input per reader: random bytes, random text over the characters the formats give
meaning to (tabs, commas, quotes, braces, line breaks, BIO tags, CJK), and JSON shaped like the
format with random values in its slots. The search is seeded so the suite is repeatable; set
BERTKIT_FUZZ_EXAMPLES=2000 for a longer, unseeded search. After the search: worked examples of the
inputs it turned up, and of fields longer than Python's csv limit.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.data import readers
from bertkit.data.readers import read_records, read_texts
from bertkit.data.tagging import read_cluener, read_conll
from bertkit.errors import BertkitError
from bertkit.tasks import get_task

_EXAMPLES = int(os.environ.get("BERTKIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_EXAMPLES or 12,
    deadline=None,
    derandomize=not _EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _task_reader(task: str, method: str):
    def read(path: str):
        return getattr(get_task(task), method)(path)

    read.__name__ = f"{task}.{method}"
    return read


# reader, file suffix: every path by which user data enters finetune, evaluate, predict and encode
READERS = [
    *[(read_records, s) for s in (".tsv", ".csv", ".jsonl", ".txt")],
    *[(read_texts, s) for s in (".tsv", ".csv", ".jsonl", ".txt")],
    *[(_task_reader("classify", "read"), s) for s in (".tsv", ".csv", ".jsonl")],
    *[(_task_reader("regression", "read"), s) for s in (".tsv", ".jsonl")],
    *[(_task_reader("classify", "read_inputs"), s) for s in (".tsv", ".csv", ".jsonl", ".txt")],
    (read_conll, ".conll"),
    (read_cluener, ".json"),
    *[(_task_reader("ner", "read"), s) for s in (".conll", ".json", ".txt")],
    *[(_task_reader("ner", "read_inputs"), s) for s in (".conll", ".jsonl", ".txt")],
    *[(_task_reader("qa", m), s) for m in ("read", "read_inputs") for s in (".json", ".jsonl")],
]
IDS = [f"{getattr(r, '__name__', r)}{s}" for r, s in READERS]

# Characters with a meaning in some format, plus any character at all.
_MEANINGFUL = list('\t,"\n\r {}[]:0123456789-\\abBIOES\u3000\u4e2d\u6587\ufeff') + ["B-PER", "I-PER", "O", '""']
TEXT = st.lists(st.sampled_from(_MEANINGFUL) | st.characters(), max_size=80).map("".join)

# JSON shaped like CLUENER, SQuAD and classification records, with any JSON value in any slot.
_LEAF = st.none() | st.booleans() | st.integers(-3, 12) | st.integers() | st.floats() | st.text(max_size=8)
_ANY = st.recursive(
    _LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_SHORT = st.text(alphabet="ab中 ", max_size=6)


def _or_any(strategy):
    """Mostly the right shape, so that the search reaches the inner checks; sometimes anything."""
    return st.one_of(strategy, strategy, strategy, _ANY)


_SPAN = _or_any(st.lists(st.integers(-1, 6), min_size=2, max_size=2))
_CLUENER = st.fixed_dictionaries(
    {"text": _or_any(_SHORT)},
    optional={
        "label": _or_any(
            st.dictionaries(
                st.sampled_from(["name", "org", ""]) | st.text(max_size=3),
                _or_any(st.dictionaries(_SHORT, _or_any(st.lists(_SPAN, max_size=2)), max_size=2)),
                max_size=2,
            )
        )
    },
)
_ANSWER = st.fixed_dictionaries({}, optional={"text": _or_any(_SHORT), "answer_start": _or_any(st.integers(-1, 6))})
_QA = st.fixed_dictionaries(
    {},
    optional={
        "id": _ANY,
        "question": _or_any(_SHORT),
        "answers": _or_any(st.lists(_ANSWER, max_size=2)),
        "is_impossible": _ANY,
        "context": _or_any(_SHORT),
    },
)
_SQUAD = st.fixed_dictionaries(
    {},
    optional={
        "data": _or_any(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "title": _ANY,
                        "paragraphs": _or_any(
                            st.lists(
                                st.fixed_dictionaries(
                                    {}, optional={"context": _or_any(_SHORT), "qas": _or_any(st.lists(_QA, max_size=2))}
                                ),
                                max_size=2,
                            )
                        ),
                    },
                ),
                max_size=2,
            )
        )
    },
)
_RECORD = st.fixed_dictionaries(
    {}, optional={"text": _or_any(_SHORT), "text_b": _or_any(_SHORT), "label": _or_any(_SHORT)}
)


def _jsonl(record):
    """JSON lines, with non-ASCII characters written as themselves or as \\u escapes."""
    return st.tuples(st.lists(_or_any(record), max_size=4), st.booleans()).map(
        lambda rows_ascii: "".join(json.dumps(r, ensure_ascii=rows_ascii[1]) + "\n" for r in rows_ascii[0])
    )


SHAPED = {
    ".json": st.one_of(_jsonl(_CLUENER), _SQUAD.map(json.dumps)),
    ".jsonl": st.one_of(_jsonl(_RECORD), _jsonl(_CLUENER), _jsonl(_QA)),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check(read, folder: Path, suffix: str, data: bytes) -> None:
    """Success, or a BertkitError that names the file; anything else fails the test."""
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    try:
        read(str(path))
    except BertkitError as e:
        assert path.name in str(e), f"the error does not name the file: {e}"


@pytest.mark.parametrize("read, suffix", READERS, ids=IDS)
@FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes(read, suffix, folder, data):
    check(read, folder, suffix, data)


@pytest.mark.parametrize("read, suffix", READERS, ids=IDS)
@FUZZ
@given(text=TEXT)
def test_random_text(read, suffix, folder, text):
    check(read, folder, suffix, text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    "read, suffix",
    [(r, s) for r, s in READERS if s in SHAPED],
    ids=[i for i, (_, s) in zip(IDS, READERS) if s in SHAPED],
)
@FUZZ
@given(data=st.data())
def test_json_shaped_like_the_format(read, suffix, folder, data):
    text = data.draw(SHAPED[suffix])
    check(read, folder, suffix, text.encode("utf-8", "surrogatepass"))


# --- Worked examples ---------------------------------------------------------------------------------
def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


@pytest.fixture
def python_csv_limit():
    """Python's own csv field limit (128 KiB) while the test runs, whatever ran before it."""
    old = csv.field_size_limit(128 * 1024)
    yield
    csv.field_size_limit(old)


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_a_200_kib_field_is_read_whole(tmp_path, suffix, python_csv_limit):
    long = ("word, " if suffix == ".csv" else "word ") * (200 * 1024 // 5)
    sep, field = ("\t", long) if suffix == ".tsv" else (",", '"' + long + '"')
    path = _write(tmp_path, "long" + suffix, f"text{sep}label\nshort{sep}neg\n{field}{sep}pos\n")
    assert [(n, len(r["text"])) for n, r in read_records(path)] == [(2, 5), (3, len(long))]
    assert len(long) >= 200 * 1024
    # the readers finetune, evaluate, predict and encode use
    for task in ("classify", "regression"):
        if task == "regression":
            path = _write(tmp_path, "long" + suffix, f"text{sep}label\nshort{sep}0.5\n{field}{sep}-1\n")
        examples = get_task(task).read(path)
        assert examples[1]["text"] == long and examples[1]["line"] == 3
        assert get_task(task).read_inputs(path)[1]["text"] == long
    assert read_texts(path)[1] == long


def test_a_csv_field_over_the_limit_names_its_first_line(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "FIELD_LIMIT", 1000)
    old = csv.field_size_limit(1000)
    try:
        path = _write(tmp_path, "open.csv", 'text,label\nfine,pos\n"never closed,pos\n' + "more,neg\n" * 200)
        with pytest.raises(BertkitError) as error:
            list(read_records(path))
    finally:
        csv.field_size_limit(old)
    assert str(error.value).startswith(
        f"{path}, line 3: a field longer than 1,000 characters starts in this "
        "row, most likely a quote that is never closed"
    )


def test_csv_quoted_fields_span_lines_and_keep_their_line_numbers(tmp_path):
    path = _write(tmp_path, "q.csv", 'text,label\n"one, ""two""\nthree",pos\n\nfour,neg\n')
    assert list(read_records(path)) == [
        (2, {"text": 'one, "two"\nthree', "label": "pos"}),
        (5, {"text": "four", "label": "neg"}),
    ]


@pytest.mark.parametrize(
    "name, text, message",
    [
        # CSV: every csv.Error, with the line
        (
            "open.csv",
            'text,label\nok,pos\n"never closed,pos\nmore\n',
            'line 3: a quoted field starts in this row and is never closed; add the closing quote (")',
        ),
        ("cr.csv", "text,label\nok,pos\na\rb,neg\n", "line 3: a carriage return (\\r) inside an unquoted field"),
        ("after.csv", 'text,label\n"a"b,neg\n', "line 2: not valid CSV (',' expected after '\"')"),
        (
            "wide.csv",
            'text,label\n"a,b",c,d\n',
            "line 2: 3 fields but the header has 2 (text, label); check for stray commas or quotes",
        ),
        # headers
        (
            "blank.tsv",
            "\na\tb\n",
            "line 1: blank, but the first line must be a header row naming the columns (e.g. text<TAB>label)",
        ),
        ("twice.tsv", "text\ttext\na\tb\n", "line 1: the header names 'text' more than once"),
        # JSON that json.loads refuses without a JSONDecodeError, or reads into strings no tokenizer takes
        ("long.jsonl", '{"text": "a", "label": ' + "1" * 5000 + "}\n", "line 1: Exceeds the limit (4300 digits)"),
        ("deep.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "line 1: JSON nested too deeply to read"),
        (
            "half.jsonl",
            '{"text": "ok", "label": "a"}\n{"text": "\\ud800", "label": "b"}\n',
            "line 2: the escape for '\\ud800' is half of a UTF-16 surrogate pair",
        ),
        # CLUENER slots holding the wrong kind of value
        (
            "none.json",
            '{"text": "ab", "label": {"name": {"a": null}}}\n',
            "line 1: name 'a' has None where a list of spans belongs; write [[start, end], ...]",
        ),
        (
            "untyped.json",
            '{"text": "ab", "label": {"": {"a": [[0, 0]]}}}\n',
            "line 1: `label` has an entity type named ''; name every type",
        ),
    ],
)
def test_inputs_the_search_turned_up(tmp_path, name, text, message):
    path = _write(tmp_path, name, text)
    read = {".json": get_task("ner").read, ".jsonl": get_task("classify").read}.get(
        Path(name).suffix, lambda p: list(read_records(p))
    )
    with pytest.raises(BertkitError) as error:
        read(path)
    assert str(error.value).startswith(f"{path}, ") and message in str(error.value)


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, "[" + "1" * 5000 + "]"], ids=["deep", "long-int"])
def test_squad_json_that_json_loads_refuses(tmp_path, body):
    path = _write(tmp_path, "squad.json", '{"data": ' + body + "}")
    with pytest.raises(BertkitError, match="squad.json"):
        get_task("qa").read(path)


def test_squad_json_with_half_a_surrogate_pair(tmp_path):
    path = _write(
        tmp_path,
        "squad.json",
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "\ud800 a",
                                "qas": [{"id": "1", "question": "a", "answers": [{"text": "a", "answer_start": 2}]}],
                            }
                        ]
                    }
                ]
            }
        ),
    )
    with pytest.raises(BertkitError, match="squad.json"):
        get_task("qa").read(path)


def test_bertkit_encode_reads_a_200_kib_field(tmp_path, minilm_dir, python_csv_limit):
    import numpy as np

    from bertkit.cli.main import main

    long = "a long review, " * (200 * 1024 // 15 + 1)
    path = _write(tmp_path, "long.csv", f'text,label\n"{long}",pos\nshort,neg\n')
    assert main(["encode", "--model", str(minilm_dir), "--input", path, "--output", str(tmp_path / "v.npy")]) == 0
    assert np.load(tmp_path / "v.npy").shape == (2, 384)

"""The server's request validation on random requests: random bytes, random JSON (any value, and objects
shaped like the requests with any value in any slot) and random headers, to /encode, /similarity and
/predict/{task}, /v1/embeddings and /embed. Every answer must be a 2xx, or a 4xx whose body is exactly
`{"error": "..."}` (under /v1/ OpenAI's `{"error": {"message", "type", "param", "code"}}`); a 5xx or an
exception inside the app (the TestClient re-raises it) is a bug.

A tiny random BERT is behind /encode and /similarity; /predict/sentiment tokenizes its inputs with the
real tokenizer and /predict/squad is a stand-in (the request checks are the server's). The search is
seeded so the suite is repeatable; set BERTKIT_FUZZ_EXAMPLES=2000 for a longer, unseeded search.
"""

from __future__ import annotations

import json
import os

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.encode import Encoder
from bertkit.encode.server import Limits, create_app
from bertkit.tasks.classify import ClassifyTask
from bertkit.tasks.qa import QATask
from bertkit.tokenizer import BertTokenizer

_EXAMPLES = int(os.environ.get("BERTKIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_EXAMPLES or 60,
    deadline=None,
    derandomize=not _EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

PATHS = st.sampled_from(
    ["/encode", "/similarity", "/predict/sentiment", "/predict/squad", "/predict/nope", "/v1/embeddings", "/embed"]
)


class Classifier:
    """A classifier stand-in that tokenizes what it is sent, text and text_b, as the real one does."""

    task = ClassifyTask  # what the server reads of a task: its name and input fields

    def __init__(self, tokenizer: BertTokenizer):
        self.tokenizer = tokenizer

    def examples(self, inputs):
        return inputs

    def __call__(self, examples):
        out = []
        for e in examples:
            ids = self.tokenizer.encode_batch([e["text"]], max_length=64)[0].ids
            if e.get("text_b"):
                ids += self.tokenizer.encode_batch([e["text_b"]], max_length=64)[0].ids
            out.append({"label": ("negative", "positive")[len(ids) % 2]})
        return out


class Reader:
    """A QA stand-in: the server checks question and context; this answers with the context's start."""

    task = QATask

    def examples(self, inputs):
        return inputs

    def __call__(self, examples):
        return [{"answer": e["context"][:3]} for e in examples]


@pytest.fixture(scope="module")
def client(tiny_dir):
    predictors = {"sentiment": Classifier(BertTokenizer.from_dir(tiny_dir)), "squad": Reader()}
    app = create_app(
        Encoder(tiny_dir), predictors, Limits(max_texts=6, max_chars=300, max_body_mb=0.01), model_name="tiny"
    )
    with TestClient(app) as c:
        yield c


def check(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", r.headers
        answer = r.json()
        assert list(answer) == ["error"], answer
        error = answer["error"]
        if r.request.url.path.startswith("/v1/"):
            assert set(error) == {"message", "type", "param", "code"}, answer
            error = error["message"]
        assert isinstance(error, str) and error, answer


# texts: random, or one of those that have tripped servers (lone surrogates, NUL, blank, over --max-chars)
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["a gorgeous film", "今天天气很好", "\ud800", "a\udfffb", "\x00", " ", "", "é" * 301, "😀 emoji"]),
)
LEAF = st.none() | st.booleans() | st.integers(-10, 10) | st.integers() | st.floats() | TEXT
ANY = st.recursive(
    LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=12
)
TEXTS = st.lists(TEXT, max_size=7)
ENCODE_OPTIONS = {
    "pooling": st.sampled_from(["cls", "mean", "max", "pooler", "none", "sum"]),
    "layer": st.integers(-4, 4) | st.lists(st.integers(-4, 4), max_size=3),
    "layer_combine": st.sampled_from(["concat", "mean", "sum"]),
    "words": st.booleans() | ANY,
    "specials": st.booleans(),
    "normalize": st.booleans() | ANY,
    "encoding": st.sampled_from(["float", "base64", "hex"]),
    "extra": ANY,
}
# per endpoint, bodies close to what it takes, so that random texts reach the model
REQUESTS = {
    "/encode": st.fixed_dictionaries({"texts": TEXTS | ANY}, optional=ENCODE_OPTIONS),
    "/similarity": st.fixed_dictionaries(
        {},
        optional={
            "pairs": st.lists(st.lists(TEXT, max_size=3), max_size=4),
            "query": TEXT,
            "texts": TEXTS,
            "layer": st.integers(-4, 4),
        },
    ),
    "/predict/sentiment": st.fixed_dictionaries(
        {},
        optional={
            "texts": TEXTS,
            "inputs": st.lists(
                st.fixed_dictionaries({}, optional={"text": TEXT, "text_b": TEXT | st.none(), "id": TEXT}), max_size=4
            ),
        },
    ),
    "/predict/squad": st.fixed_dictionaries(
        {},
        optional={
            "texts": TEXTS,
            "inputs": st.lists(
                st.fixed_dictionaries({}, optional={"question": TEXT, "context": TEXT, "id": TEXT}), max_size=4
            ),
        },
    ),
    "/predict/nope": st.fixed_dictionaries({"texts": TEXTS}),
    "/v1/embeddings": st.fixed_dictionaries(
        {"input": TEXT | TEXTS | ANY},
        optional={
            "model": st.sampled_from(["tiny", "other"]) | ANY,
            "encoding_format": st.sampled_from(["float", "base64", "hex"]),
            "dimensions": st.integers(-1, 40) | ANY,
            "truncate": st.booleans(),
            "user": TEXT,
        },
    ),
    "/embed": st.fixed_dictionaries(
        {"inputs": TEXT | TEXTS | ANY},
        optional={
            "normalize": st.booleans() | ANY,
            "truncate": st.booleans(),
            "truncation_direction": st.sampled_from(["Left", "Right", "right"]),
            "prompt_name": st.none() | TEXT,
            "dimensions": st.none() | st.integers(0, 40),
        },
    ),
}


@FUZZ
@given(path=PATHS, body=st.binary(max_size=400) | ANY.map(lambda v: json.dumps(v).encode()))
def test_random_bodies(client, path, body):
    check(client.post(path, content=body))


@settings(FUZZ, max_examples=_EXAMPLES or 150)
@given(request=st.sampled_from(sorted(REQUESTS)).flatmap(lambda p: st.tuples(st.just(p), REQUESTS[p])))
def test_random_requests_shaped_like_the_real_ones(client, request):
    path, body = request
    check(client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}))


def test_the_inputs_the_search_turned_up(client):
    for path, body, says in [
        ("/encode", {"texts": ["\ud800"]}, "texts[0] holds a lone UTF-16 surrogate (U+D800) at character 0"),
        ("/similarity", {"pairs": [["ok", "a\udfffb"]]}, "pairs[1] holds a lone UTF-16 surrogate (U+DFFF)"),
        ("/predict/sentiment", {"inputs": [{"text": "ok", "text_b": "\udc00"}]}, "inputs[0].text_b holds"),
        ("/predict/squad", {"inputs": [{"question": "\ud83d?", "context": "c"}]}, "inputs[0].question holds"),
    ]:
        r = client.post(path, content=json.dumps(body).encode())
        assert r.status_code == 400 and says in r.json()["error"], r.text
    emoji = client.post("/encode", content=json.dumps({"texts": ["\ud83d\ude00"]}).encode())  # a whole pair: fine
    assert emoji.status_code == 200 and emoji.json()["shape"] == [1, 32]


HEADER_NAME = st.sampled_from(
    [
        "Content-Type",
        "Authorization",
        "Accept",
        "Origin",
        "Content-Encoding",
        "Accept-Encoding",
        "X-Forwarded-For",
        "Cookie",
    ]
) | st.from_regex(r"X-[A-Za-z0-9-]{1,12}", fullmatch=True)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)  # what httpx sends
GOOD = {
    "/encode": {"texts": ["a gorgeous film"]},
    "/similarity": {"query": "a film", "texts": ["a gorgeous film"]},
    "/predict/sentiment": {"texts": ["a gorgeous film"]},
    "/predict/squad": {"inputs": [{"question": "what?", "context": "a gorgeous film"}]},
    "/v1/embeddings": {"input": ["a gorgeous film"], "model": "tiny"},
    "/embed": {"inputs": "a gorgeous film"},
}


@FUZZ
@given(
    path=PATHS,
    headers=st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=4),
    method=st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "PATCH"]),
)
def test_random_headers_and_methods(client, path, headers, method):
    body = json.dumps(GOOD.get(path, {"texts": ["a"]})).encode()
    r = client.request(method, path, content=body, headers=headers)
    check(r)
    if method == "POST" and path != "/predict/nope":
        assert r.status_code == 200, r.text  # no header makes a good request bad

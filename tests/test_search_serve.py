"""POST /search: the same hits as `bertkit search`, validated like every endpoint, and `bertkit serve
--index` refusing an index built by another model."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from test_search import TEXTS, small_index  # noqa: F401  (a module fixture: the index of TEXTS)
from test_serve_http import StubEngine

from bertkit.cli.main import main as cli
from bertkit.cli.serve import ServeConfig, build_app
from bertkit.encode.server import Access, Limits, create_app
from bertkit.errors import BertkitError
from bertkit.search.index import Index


@pytest.fixture(scope="module")
def api(minilm_dir, small_index):  # noqa: F811
    cfg = ServeConfig(model=str(minilm_dir), index=str(small_index), device="cpu", max_texts=4, max_chars=100)
    with TestClient(build_app(cfg)) as client:
        yield client


def test_search_answers_what_the_cli_writes(api, small_index, tmp_path):  # noqa: F811
    queries = [TEXTS[3], "a film with a great cast"]
    path = tmp_path / "q.txt"
    path.write_text("\n".join(queries) + "\n", encoding="utf-8")
    out = tmp_path / "hits.jsonl"
    args = ["search", "--index", str(small_index), "--queries", str(path), "-k", "4", "--output", str(out)]
    assert cli([*args, "--device", "cpu"]) == 0
    want = [json.loads(line) for line in out.read_text().splitlines()]
    r = api.post("/search", json={"queries": queries, "k": 4})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [[(h["row"], h["id"], h["text"]) for h in g["hits"]] for g in got] == [
        [(h["row"], h["id"], h["text"]) for h in w["hits"]] for w in want
    ]
    for g, w in zip(got, want):
        assert g["query"] == w["query"]
        assert [h["score"] for h in g["hits"]] == pytest.approx([h["score"] for h in w["hits"]], abs=1e-5)
    one = api.post("/search", json={"query": queries[0], "k": 4}).json()["results"][0]
    assert [h["row"] for h in one["hits"]] == [h["row"] for h in got[0]["hits"]]
    assert [h["score"] for h in one["hits"]] == pytest.approx([h["score"] for h in got[0]["hits"]], abs=1e-5)
    assert one["hits"][0]["id"] == "t3" and got[1]["hits"][0]["id"] == "t2"  # the nearest texts, by meaning
    # k above the index's size: every text, ranked
    assert len(api.post("/search", json={"query": "x", "k": 1000}).json()["results"][0]["hits"]) == len(TEXTS)


@pytest.mark.parametrize(
    "body, status, says",
    [
        ({"query": ""}, 400, "`query` is empty"),
        ({"query": "   "}, 400, "`query` is empty"),
        ({"queries": []}, 400, "`queries` is empty"),
        ({"queries": ["a", ""]}, 400, "queries[1] is empty"),
        ({"queries": ["a"] * 5}, 413, "at most 4"),
        ({"query": "x" * 101}, 413, "limit is 100"),
        ({"query": "a", "k": 0}, 422, "`k` is 0: send 1 to 1000"),
        ({"query": "a", "k": 1001}, 422, "`k` is 1001: send 1 to 1000"),
        ({"query": "a", "k": "ten"}, 422, "`k`"),
        ({"query": "a", "queries": ["b"]}, 422, "send either `query` or `queries`"),
        ({"k": 3}, 422, "send either `query` or `queries`"),
        ({"query": "a", "top": 3}, 422, "unknown field `top`"),
    ],
)
def test_bad_search_requests_get_4xx_saying_what_to_send(api, body, status, says):
    r = api.post("/search", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]


def test_search_without_an_index_or_a_key(small_index):  # noqa: F811
    with TestClient(create_app(None, {}, Limits(), encode_engine=StubEngine())) as client:
        r = client.post("/search", json={"query": "a"})
        assert r.status_code == 404 and "no index is loaded: start the server with --model DIR --index IDX" in r.text
    app = create_app(
        None, {}, Limits(), encode_engine=StubEngine(), access=Access(api_key="k"), index=Index.load(small_index)
    )
    with TestClient(app) as client:
        assert client.post("/search", json={"query": "a"}).status_code == 401
        assert "/search" in client.get("/openapi.json").json()["paths"]


def test_serve_refuses_an_index_of_another_model(tiny_dir, small_index):  # noqa: F811
    with pytest.raises(BertkitError, match="is not the model that built the index"):
        build_app(ServeConfig(model=str(tiny_dir), index=str(small_index)))
    with pytest.raises(BertkitError, match="needs the model that built it: pass --model too"):
        build_app(ServeConfig(index=str(small_index), task=["x=y"]))

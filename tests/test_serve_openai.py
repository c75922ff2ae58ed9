"""`bertkit serve` for clients written for other servers: OpenAI's embeddings API (/v1/embeddings,
/v1/models) through the real `openai` package, and text-embeddings-inference's /embed through httpx,
against a live server on 127.0.0.1. The vectors are the `Encoder`'s; the token counts are the
tokenizer's; the requests share the batcher, the limits and the API key with bertkit's own endpoints;
the OpenAPI schema describes every answer."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from test_serve_http import StubEngine, serving

from bertkit.encode import Encoder
from bertkit.encode.server import Access, Limits, create_app

TEXTS = [
    "This is an example sentence",
    "a dull , tedious mess",
    "Barack Obama visited Paris on Monday",
    "今天天气很好",
]
LONG = "the movie was wonderful and moving , " * 60  # 7 tokens x 60 + [CLS] and [SEP] = 422: over MiniLM's 256
KEY = "s3cret"


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder(minilm_dir)


@pytest.fixture(scope="module")
def url(encoder):
    with serving(create_app(encoder, {}, model_name="minilm", access=Access(api_key=KEY))) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    with OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


def test_openai_client_gets_the_encoders_vectors_and_token_counts(client, encoder):
    want = encoder.encode(TEXTS)
    tokens = sum(len(ids) for ids in encoder.tokenize(TEXTS))
    for fmt in ("float", "base64", None):  # None: what the openai package asks for by default (base64, decoded)
        kwargs = {"encoding_format": fmt} if fmt else {}
        r = client.embeddings.create(input=TEXTS, model="minilm", **kwargs)
        assert r.object == "list" and r.model == "minilm" and [d.index for d in r.data] == [0, 1, 2, 3]
        assert all(d.object == "embedding" for d in r.data)
        got = np.array([decode(d.embedding) if fmt == "base64" else d.embedding for d in r.data])
        assert got.shape == (4, 384)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert r.usage.prompt_tokens == r.usage.total_tokens == tokens
    one = client.embeddings.create(input="This is an example sentence", model="minilm", encoding_format="float")
    assert len(one.data) == 1 and one.usage.prompt_tokens == 7  # [CLS] this is an example sentence [SEP]
    np.testing.assert_allclose(one.data[0].embedding, want[0], rtol=0, atol=1e-6)
    assert client.embeddings.create(input=TEXTS[:1], model="minilm", dimensions=384).data[0].embedding


def test_openai_client_lists_the_served_model(client):
    assert [(m.id, m.object, m.owned_by) for m in client.models.list()] == [("minilm", "model", "bertkit")]
    model = client.models.retrieve("minilm")
    assert model.id == "minilm" and model.created <= time.time()
    with pytest.raises(openai.NotFoundError, match="model `gpt-4` is not served here: send `minilm`"):
        client.models.retrieve("gpt-4")


def test_openai_client_errors_say_how_to_fix_the_request(url, client, encoder):
    cases = [
        (dict(input=[[101, 2023]]), openai.UnprocessableEntityError, "input[0] is a token id"),
        (dict(input=[1, 2, 3]), openai.UnprocessableEntityError, "check_embedding_ctx_length=False"),
        (dict(input=[]), openai.BadRequestError, "`input` is empty"),
        (dict(input=["a", " "]), openai.BadRequestError, "input[1] is empty"),
        (dict(input="a", model="text-embedding-3-small"), openai.NotFoundError, "--model-name text-embedding-3-small"),
        (dict(input="a", dimensions=256), openai.BadRequestError, "gives 384-dimensional vectors"),
        (
            dict(input=["a", LONG]),
            openai.BadRequestError,
            "input[1] has 422 tokens and model `minilm` reads at most 256",
        ),
    ]
    for kwargs, error, says in cases:
        with pytest.raises(error) as caught:
            client.embeddings.create(**{"model": "minilm", **kwargs})
        assert says in str(caught.value), str(caught.value)  # the message is in the exception's text
        assert caught.value.type == "invalid_request_error"
    # what the long-text error offers: cut it as /encode does, and count the tokens the model read
    r = client.embeddings.create(input=[LONG], model="minilm", encoding_format="float", extra_body={"truncate": True})
    np.testing.assert_allclose(r.data[0].embedding, encoder.encode([LONG])[0], rtol=0, atol=1e-6)
    assert r.usage.prompt_tokens == 256
    with OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError, match="a wrong API key: send the header"):
            bad.models.list()


def test_tei_embed_with_httpx(url, encoder, minilm_dir):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{url}/embed", json={"inputs": TEXTS}, headers=auth)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), encoder.encode(TEXTS), rtol=0, atol=1e-6)
    one = httpx.post(f"{url}/embed", json={"inputs": TEXTS[0], "normalize": False}, headers=auth).json()
    raw = Encoder(minilm_dir, normalize=False).encode(TEXTS[:1])
    assert len(one) == 1 and abs(np.linalg.norm(one[0]) - 1) > 0.1  # not normalised, as asked
    np.testing.assert_allclose(np.array(one), raw, rtol=0, atol=1e-6)
    cut = httpx.post(f"{url}/embed", json={"inputs": [LONG], "truncate": True}, headers=auth).json()
    np.testing.assert_allclose(np.array(cut), encoder.encode([LONG]), rtol=0, atol=1e-6)
    for body, status, says in [
        ({"inputs": [TEXTS[0], LONG]}, 413, "inputs[1] has 422 tokens and model `minilm` reads at most 256: split"),
        ({"inputs": [LONG], "truncation_direction": "Left", "truncate": True}, 422, '"Left" is not supported'),
        ({"inputs": "a", "prompt_name": "query"}, 422, "put it in front of each text"),
        ({"inputs": "a", "dimensions": 64}, 400, "leave `dimensions` out or send 384"),
        ({"inputs": [101, 2023]}, 422, "inputs[0] is a token id"),
        ({"inputs": None}, 422, "inputs is null: send a string or a list of strings"),
        ({"input": "a"}, 422, "unknown field `input`"),
    ]:
        r = httpx.post(f"{url}/embed", json=body, headers=auth)
        assert r.status_code == status and list(r.json()) == ["error"], r.text
        assert says in r.json()["error"], r.text
    assert httpx.post(f"{url}/embed", json={"inputs": "a"}).status_code == 401


def test_serve_names_the_model_after_its_directory_or_model_name(minilm_dir):
    from bertkit.cli.serve import ServeConfig, build_app

    with TestClient(build_app(ServeConfig(model=str(minilm_dir)))) as api:
        assert [m["id"] for m in api.get("/v1/models").json()["data"]] == ["minilm"]
    with TestClient(build_app(ServeConfig(model=str(minilm_dir), model_name="text-embedding-3-small"))) as api:
        assert api.get("/health").json()["encoder"]["name"] == "text-embedding-3-small"
        r = api.post("/v1/embeddings", json={"input": "a", "model": "text-embedding-3-small"})
        assert r.status_code == 200 and r.json()["model"] == "text-embedding-3-small"


# ---- with a stand-in encoder: no fetched model needed ----


def stub_app(engine=None, limits=None, access=None):
    return create_app(None, {}, limits or Limits(max_texts=40), encode_engine=engine or StubEngine(), access=access)


def test_every_api_shares_one_fair_batcher():
    """A 1-text request through /embed, sent while 40 texts through /v1/embeddings are being encoded
    4 at a time, rides in the next batch instead of waiting for all of them."""
    batches = []

    class Recording(StubEngine):
        def __call__(self, items):
            batches.append([len(text) for text, *_ in items])  # token ids: the big texts have 5, the small 3
            return super().__call__(items)

    app = stub_app(Recording(delay=0.05), Limits(max_batch=4, max_wait_ms=0, max_texts=40))
    with serving(app) as url, ThreadPoolExecutor(1) as pool:
        big = pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": ["one two three"] * 40}, timeout=30)
        time.sleep(0.12)
        small = httpx.post(f"{url}/embed", json={"inputs": "hi"}, timeout=30)
        assert small.json() == [[3.0, 1.0, 0.0]] and not big.done()
        assert big.result().json()["usage"]["prompt_tokens"] == 40 * 5
        metrics = httpx.get(f"{url}/metrics").text
    joined = next(i for i, b in enumerate(batches) if 3 in b)
    assert batches[joined] == [5, 5, 5, 3]  # a share of the next batch, not the end of the queue
    assert sum(len(b) for b in batches[joined + 1 :]) > 0  # the big request still had texts waiting
    assert 'bertkit_requests_total{endpoint="/v1/embeddings",status="200"} 1' in metrics
    assert 'bertkit_requests_total{endpoint="/embed",status="200"} 1' in metrics


def test_limits_and_the_api_key_hold_for_every_api():
    with TestClient(stub_app(limits=Limits(max_texts=2, max_chars=20), access=Access(api_key="k"))) as api:
        ok = {"Authorization": "Bearer k"}
        r = api.post("/v1/embeddings", json={"input": ["a", "b", "c"]}, headers=ok)
        assert r.status_code == 413 and "send at most 2" in r.json()["error"]["message"]
        r = api.post("/embed", json={"inputs": ["x" * 21]}, headers=ok)
        assert r.status_code == 413 and "the limit is 20" in r.json()["error"]
        r = api.post("/embed", content=json.dumps({"inputs": ["a\ud800"]}).encode(), headers=ok)
        assert r.status_code == 400 and "lone UTF-16 surrogate" in r.json()["error"]
        for path in ("/v1/models", "/v1/models/encoder"):
            assert api.get(path).status_code == 401 and api.get(path, headers=ok).status_code == 200
        assert api.post("/v1/embeddings", json={"input": "a"}).status_code == 401
        r = api.post("/v1/embeddings", json={"input": "a b c"}, headers=ok).json()
        assert r["data"][0]["embedding"] == [5.0, 1.0, 0.0] and r["usage"]["prompt_tokens"] == 5
        assert api.post("/embed", json={"inputs": "a"}, headers=ok).json() == [[3.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    "method, path, body, status, says",
    [
        ("POST", "/v1/embeddings", {"input": "a", "model": "x"}, 404, "model `x` is not served here"),
        ("POST", "/v1/embeddings", {"inputs": "a"}, 422, "unknown field `inputs`"),
        ("POST", "/v1/embeddings", {"input": "a", "encoding_format": "hex"}, 422, "encoding_format"),
        ("POST", "/v1/embeddings", b"{not json", 422, "not valid JSON"),
        ("GET", "/v1/embeddings", None, 405, "use POST"),
        ("GET", "/v1/nothing", None, 404, "there is no /v1/nothing: the endpoints are POST /encode"),
        ("POST", "/v1/embeddings", {"input": ["x" * 300] * 3}, 413, "--max-body-mb"),
    ],
)
def test_errors_under_v1_are_in_openais_shape(method, path, body, status, says):
    with TestClient(stub_app(limits=Limits(max_texts=40, max_body_mb=0.0005))) as api:
        content = body if isinstance(body, bytes) else None
        r = api.request(method, path, json=None if content else body, content=content)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert list(r.json()) == ["error"] and set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and says in error["message"]


def test_the_openapi_schema_describes_every_answer():
    with TestClient(stub_app()) as api:
        schema = api.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def fields(ref_or_schema: dict) -> set[str]:
        name = ref_or_schema["$ref"].rsplit("/", 1)[1]
        return set(components[name]["properties"])

    def ok(path: str, method: str) -> dict:
        return schema["paths"][path][method]["responses"]["200"]["content"]

    assert fields(ok("/v1/embeddings", "post")["application/json"]["schema"]) == {"object", "data", "model", "usage"}
    assert set(components["Embedding"]["properties"]) == {"object", "index", "embedding"}
    assert set(components["Usage"]["properties"]) == {"prompt_tokens", "total_tokens"}
    assert fields(ok("/v1/models", "get")["application/json"]["schema"]) == {"object", "data"}
    assert set(components["ModelCard"]["properties"]) == {"id", "object", "created", "owned_by"}
    embed = components["EmbedResponse"]
    assert embed["type"] == "array" and embed["items"] == {"type": "array", "items": {"type": "number"}}
    assert fields(ok("/encode", "post")["application/json"]["schema"]) == {"vectors", "shape", "results", "dtype"}
    assert set(components["TokenResult"]["properties"]) == {"tokens", "spans", "vectors", "shape"}
    assert fields(ok("/similarity", "post")["application/json"]["schema"]) == {"scores"}
    assert fields(ok("/predict/{task}", "post")["application/json"]["schema"]) == {"predictions"}
    assert {"status", "tasks", "queue_depth", "api_key", "encoder"} <= fields(
        ok("/health", "get")["application/json"]["schema"]
    )
    assert ok("/metrics", "get") == {"text/plain": {"schema": {"type": "string"}}}
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            answer = operation["responses"]["200"]["content"]
            assert all(media["schema"] for media in answer.values()), (method, path, "answers {}")
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    want = "OpenAIErrorResponse" if path.startswith("/v1/") else "ErrorResponse"
                    assert ref.endswith("/" + want), (method, path, status, ref)  # never FastAPI's HTTPValidationError


def test_a_body_that_is_not_a_request_is_refused_before_any_tokenizing():
    calls = []

    class Counting(StubEngine):
        def tokenize(self, texts, truncate=True):
            calls.append(threading.current_thread().name)
            return super().tokenize(texts, truncate)

    with TestClient(stub_app(Counting())) as api:
        assert api.post("/v1/embeddings", json={"input": ""}).status_code == 400
        assert api.post("/embed", json={"inputs": []}).status_code == 400
        assert not calls
        assert api.post("/embed", json={"inputs": ["a"]}).status_code == 200
    assert calls and calls[0] != threading.main_thread().name  # off the event loop's thread


def test_the_serving_guide_examples_run_as_written(encoder):
    from test_serve_readme import run_curl

    guide = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    section = guide.split("\n## OpenAI and text-embeddings-inference clients\n", 1)[1].split("\n## ", 1)[0]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    curl = section.split("```sh\n", 1)[1].split("```", 1)[0].strip()
    with serving(create_app(encoder, {}, model_name="minilm")) as url:
        port = url.rsplit(":", 1)[1]
        scope: dict = {}
        exec(python.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), scope)
        r = scope["r"]
        assert r.usage.prompt_tokens == 10 and len(r.data[0].embedding) == 384  # as its comments say
        assert [m.id for m in scope["client"].models.list()] == ["minilm"]
        answer = json.loads(run_curl(curl.split("   #")[0].replace("localhost:8000", f"localhost:{port}")))
    np.testing.assert_allclose(np.array(answer), encoder.encode(["a gorgeous film"]), rtol=0, atol=1e-6)

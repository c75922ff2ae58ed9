"""`bertkit serve` at the HTTP level, with a stand-in encoder: the body cap and read timeout (over raw
sockets, as a misbehaving client sends them), one error shape for every 4xx, JSON bodies whatever the
Content-Type, the API key, CORS, and /docs served without any CDN."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from bertkit.client import Client
from bertkit.encode.server import Access, Limits, create_app
from bertkit.errors import BertkitError


@contextlib.contextmanager
def serving(app):
    """Run `app` on uvicorn in a background thread on a free port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


class StubEngine:
    """A fake encoder: vector [len(text), 1, 0] (for a text sent as token ids, [their count, 1, 0]); sleeps
    `delay` per batch; fails on texts holding 'boom'. Its tokenizer gives [CLS], one id per word and [SEP]."""

    defaults = {"pooling": "cls", "layer": -1, "normalize": False}
    dim, max_length = 3, 8

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def tokenize(self, texts, truncate=True):
        ids = [[101, *(1000 + len(word) for word in text.split()), 102] for text in texts]
        return [seq[: self.max_length - 1] + [102] if truncate and len(seq) > self.max_length else seq for seq in ids]

    def __call__(self, items):
        time.sleep(self.delay)
        if any("boom" in text for text, *_ in items):
            raise RuntimeError("boom in the model")
        return [np.array([len(text), 1.0, 0.0], dtype=np.float32) for text, *_ in items]


def app(limits: Limits | None = None, access: Access | None = None):
    return create_app(None, {}, limits or Limits(max_texts=4, max_chars=50), encode_engine=StubEngine(), access=access)


@pytest.fixture(scope="module")
def stub():
    with TestClient(app()) as client:
        yield client


def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict, bool]:
    """Send `head` (request line and headers) and `body` as they are; the status, the JSON answer,
    and whether the server then closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:  # 20 s: only a guard against hanging
        s.sendall(head + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        headers, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", headers).group(1))
        while len(rest) < length:
            rest += s.recv(65536)
        closed = s.recv(1) == b""  # the server closes; a kept-alive connection would block here until the guard
    return int(headers.split()[1]), json.loads(rest[:length]), closed


def test_the_default_body_cap_follows_the_text_limits():
    assert Limits().max_body_bytes == 256 * 20_000 * 4 + 1_000_000
    assert Limits(max_texts=10, max_chars=100).max_body_bytes == 10 * 100 * 4 + 1_000_000
    assert Limits(max_body_mb=2.5).max_body_bytes == 2_500_000


def test_a_body_over_the_cap_is_refused_before_it_is_read():
    with serving(app(Limits(max_body_mb=0.001, body_timeout_s=60))) as url:
        # a huge Content-Length and no body at all: answered at once, without waiting for the bytes
        status, answer, closed = raw_request(
            url,
            b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n",
            b'{"texts": ["a"',
        )
        assert status == 413 and closed and "over 1,000 bytes" in answer["error"]
        # no Content-Length (chunked): refused once more than the cap has come
        chunk = b'{"texts": [' + b'"abc", ' * 200
        status, answer, closed = raw_request(
            url,
            b"POST /encode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n",
            b"%x\r\n%s\r\n" % (len(chunk), chunk),
        )
        assert status == 413 and closed and "--max-body-mb" in answer["error"]
        # under the cap, the same server answers
        assert httpx.post(f"{url}/encode", json={"texts": ["abc"]}).json()["vectors"] == [[3.0, 1.0, 0.0]]


def test_a_stalled_body_is_answered_408_and_the_connection_closed():
    with serving(app(Limits(body_timeout_s=0.5))) as url:
        status, answer, closed = raw_request(
            url, b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n", b'{"texts": ["only 20'
        )
        assert status == 408 and closed and "within 0.5 s" in answer["error"]
        assert httpx.post(f"{url}/encode", json={"texts": ["abc"]}).status_code == 200


@pytest.mark.parametrize(
    "method, path, body, headers, status, says",
    [
        ("GET", "/nowhere", None, {}, 404, "there is no /nowhere: the endpoints are POST /encode"),
        ("GET", "/encode", None, {}, 405, '/encode does not take GET: use POST with a JSON body like {"texts"'),
        ("PUT", "/predict/x", b"{}", {}, 405, "use POST"),
        ("POST", "/encode", b'{"texts": ["\xff\xfe"]}', {}, 400, "not UTF-8 text (byte 12)"),
        ("POST", "/encode", b'{"texts": [1]}', {"Content-Type": "application/json"}, 422, "texts.0"),
        ("POST", "/encode", b'{"texts": ["' + b"x" * 51 + b'"]}', {}, 413, "limit is 50"),
        ("POST", "/encode", b"", {}, 422, "the body must be a JSON object"),
        ("POST", "/encode", b"[" * 100_000 + b"]" * 100_000, {}, 400, 'error parsing the body; send {"texts"'),
    ],
)
def test_every_4xx_is_one_json_error_saying_what_to_send(stub, method, path, body, headers, status, says):
    r = stub.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and list(r.json()) == ["error"]
    assert says in r.json()["error"]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8", "multipart/form-data"],
)
def test_json_bodies_are_read_whatever_the_content_type(stub, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = stub.post("/encode", content=b'{"texts": ["abcd", "ab"]}', headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["vectors"] == [[4.0, 1.0, 0.0], [2.0, 1.0, 0.0]]


def test_an_api_key_guards_everything_but_health_the_page_and_the_docs():
    with TestClient(app(access=Access(api_key="s3cret"))) as client:
        for headers, said in (
            ({}, "no API key"),
            ({"Authorization": "Bearer wrong"}, "a wrong API key"),
            ({"Authorization": "Basic s3cret"}, "a wrong API key"),
        ):
            r = client.post("/encode", json={"texts": ["abc"]}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert said in r.json()["error"] and "Authorization: Bearer KEY" in r.json()["error"]
        assert client.get("/metrics").status_code == 401
        assert client.post("/predict/x", json={"texts": ["a"]}).status_code == 401
        ok = client.post("/encode", json={"texts": ["abc"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.json()["vectors"] == [[3.0, 1.0, 0.0]]
        assert client.get("/health").json()["api_key"] is True
        assert client.get("/").status_code == 200 and client.get("/docs").status_code == 200
        schema = client.get("/openapi.json").json()
        assert schema["security"] == [{"bearer": []}]  # Swagger UI's Authorize button
    with TestClient(app()) as client:
        assert client.post("/encode", json={"texts": ["abc"]}).status_code == 200  # no key configured: open
        assert client.get("/health").json()["api_key"] is False


def test_the_client_sends_its_api_key(monkeypatch):
    monkeypatch.delenv("BERTKIT_API_KEY", raising=False)
    with serving(app(access=Access(api_key="s3cret"))) as url:
        with Client(url, api_key="s3cret") as client:
            assert client.encode(["abc"]).tolist() == [[3.0, 1.0, 0.0]]
        with Client(url) as client, pytest.raises(BertkitError, match="401: this server needs an API key"):
            client.encode(["abc"])
        monkeypatch.setenv("BERTKIT_API_KEY", "s3cret")
        with Client(url) as client:  # what `bertkit encode --server` uses
            assert client.encode(["ab"]).tolist() == [[2.0, 1.0, 0.0]]


def test_cors_headers_go_only_to_the_allowed_origins():
    allowed, other = "https://app.example.com", "https://evil.example.com"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with TestClient(app(access=Access(api_key="k", cors_origins=(allowed,)))) as client:
        r = client.options("/encode", headers={"Origin": allowed, **preflight})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = client.options("/encode", headers={"Origin": other, **preflight})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        assert "Disallowed CORS origin" in r.json()["error"] and allowed in r.json()["error"]
        r = client.post("/encode", json={"texts": ["abc"]}, headers={"Origin": allowed, "Authorization": "Bearer k"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        r = client.post("/encode", json={"texts": ["abc"]}, headers={"Origin": allowed})  # a browser reads the 401
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == allowed
        r = client.post("/encode", json={"texts": ["abc"]}, headers={"Origin": other, "Authorization": "Bearer k"})
        assert "access-control-allow-origin" not in r.headers
    with TestClient(app()) as client:  # no --cors-origin: no CORS headers for anyone
        r = client.post("/encode", json={"texts": ["abc"]}, headers={"Origin": allowed})
        assert r.status_code == 200 and not any(h.startswith("access-control") for h in r.headers)


def test_docs_load_everything_from_the_server_itself(stub):
    html = stub.get("/docs").text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(urls) == 4, urls  # the CSS, the favicon, the JS, the schema
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        r = stub.get(url)
        assert r.status_code == 200 and len(r.content) > 500, url
    assert "SwaggerUIBundle" in stub.get("/docs/static/swagger-ui-bundle.js").text
    assert stub.get("/docs/static/nothing.js").json()["error"].startswith("there is no")


def test_serve_cli_security_options(monkeypatch, capsys):
    from bertkit.cli.serve import ServeConfig, _join_repeated, access_from, main
    from bertkit.config import parse_args

    argv = _join_repeated(
        ["--cors-origin", "https://a.example", "--port", "1", "--cors-origin=http://b:8080"], "--cors-origin"
    )
    cfg = parse_args(ServeConfig, argv, prog="bertkit serve")
    monkeypatch.delenv("BERTKIT_API_KEY", raising=False)
    assert access_from(cfg) == Access(api_key=None, cors_origins=("https://a.example", "http://b:8080"))
    monkeypatch.setenv("BERTKIT_API_KEY", "from-env")
    assert access_from(cfg).api_key == "from-env"
    assert access_from(ServeConfig(api_key="flag")).api_key == "flag"  # the flag wins
    for origin in ("a.example", "https://a.example/", "https://a.example/page"):
        with pytest.raises(BertkitError, match="give an origin, scheme and host"):
            access_from(ServeConfig(cors_origin=[origin]))
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--api-key" in out and "--max-body-mb" in out and "Security: the server listens on 127.0.0.1" in out
    assert ServeConfig().host == "127.0.0.1"

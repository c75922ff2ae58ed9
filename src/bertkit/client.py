"""`Client("http://127.0.0.1:8000")`: the Python side of `bertkit serve`.

    from bertkit.client import Client
    vectors = Client("http://127.0.0.1:8000").encode(["a sentence", "another"])   # float32 [2, H]

Server errors raise `BertkitError` with the server's message; 503 (busy) is retried, honouring the
server's Retry-After, at most `retries` times. A server started with `--api-key` needs the same key:
`Client(url, api_key=KEY)`, or the BERTKIT_API_KEY environment variable (so `bertkit encode --server`
works too).
"""

from __future__ import annotations

import base64
import os
import time

import httpx
import numpy as np

from bertkit.errors import BertkitError


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        api_key: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.retries, self.max_retry_wait = retries, max_retry_wait
        api_key = api_key or os.environ.get("BERTKIT_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict | None = None):
        for attempt in range(self.retries + 1):
            try:
                r = self._http.request(method, path, json=body)
            except httpx.HTTPError as e:
                raise BertkitError(
                    f"cannot reach the bertkit server at {self.url}{path}: {e}; is `bertkit serve` running there?"
                ) from e
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(min(float(r.headers.get("Retry-After", 1) or 1), self.max_retry_wait))
                continue
            if r.status_code >= 400:
                try:
                    message = r.json().get("error") or r.text
                except (ValueError, AttributeError):  # not JSON, or not an object
                    message = r.text
                raise BertkitError(f"{method} {self.url}{path} -> {r.status_code}: {message}")
            return r.json() if path != "/metrics" else r.text
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def encode(
        self,
        texts: list[str],
        pooling: str | None = None,
        layer: int | list[int] | None = None,
        normalize: bool | None = None,
        layer_combine: str | None = None,
    ) -> np.ndarray:
        """float32 [len(texts), dim]; the vectors travel base64-encoded (exact, and 4x smaller than JSON).
        `layer` may list several layers, joined by `layer_combine` (concat or mean)."""
        body = _body(texts, pooling=pooling, layer=layer, normalize=normalize, layer_combine=layer_combine)
        out = self._request("POST", "/encode", body)
        return _decode(out["vectors"], out["shape"])

    def encode_tokens(
        self,
        texts: list[str],
        words: bool = False,
        specials: bool = False,
        layer: int | list[int] | None = None,
        layer_combine: str | None = None,
    ) -> list[dict]:
        """Per text {"tokens", "spans", "vectors"}: its word pieces (or words), their [start, end)
        character spans in the text, and float32 vectors [n, D] (`Encoder.encode_tokens` on the server)."""
        options = {"words": words or None, "specials": specials or None, "layer": layer, "layer_combine": layer_combine}
        out = self._request("POST", "/encode", _body(texts, pooling="none", **options))
        return [
            {
                "tokens": r["tokens"],
                "spans": [tuple(s) for s in r["spans"]],
                "vectors": _decode(r["vectors"], r["shape"]),
            }
            for r in out["results"]
        ]

    def similarity(
        self, pairs: list[tuple[str, str]] | None = None, query: str | None = None, texts: list[str] | None = None
    ) -> list[float]:
        """Cosine scores: one per pair, or one per text against `query`."""
        body: dict[str, object]
        if pairs is not None:
            body = {"pairs": [list(p) for p in pairs]}
        else:
            body = {"query": query, "texts": list(texts or [])}
        return self._request("POST", "/similarity", body)["scores"]

    def predict(self, task: str, texts_or_inputs: list) -> list[dict]:
        """Strings, or dicts ({"text", "text_b"} / qa {"question", "context"}) -> the task's predictions."""
        items = list(texts_or_inputs)
        body = {"inputs": items} if items and isinstance(items[0], dict) else {"texts": items}
        return self._request("POST", f"/predict/{task}", body)["predictions"]

    def health(self) -> dict:
        return self._request("GET", "/health")

    def metrics(self) -> str:
        return self._request("GET", "/metrics")


def _body(texts: list[str], **options) -> dict[str, object]:
    """An /encode request for base64 vectors, with the options that are set."""
    return {"texts": list(texts), "encoding": "base64", **{k: v for k, v in options.items() if v is not None}}


def _decode(data: str, shape: list[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype="<f4").reshape(shape).copy()

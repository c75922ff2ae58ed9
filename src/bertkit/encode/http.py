"""The HTTP layer around the server's app, as plain ASGI middleware (outermost first): CountRequests
(metrics), Cors (only with --cors-origin), RequireKey (only with --api-key), ReadBody (size cap, read
timeout, JSON whatever the Content-Type); and the JSON error every one of them answers with."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from bertkit.encode.batcher import Metrics


class CountRequests:
    """Requests by endpoint and status, and their latency, into `Metrics`. Plain ASGI rather than
    @app.middleware("http"), which would hide the client's disconnect from the endpoint."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    ENDPOINTS = (
        "/encode",
        "/similarity",
        "/search",
        "/health",
        "/metrics",
        "/v1/embeddings",
        "/v1/models",
        "/embed",
        "/fill-mask",
        "/nsp",
    )

    @classmethod
    def endpoint(cls, path: str) -> str:
        """The metrics label of a path: an endpoint, /predict for every task, else `other`."""
        if path in cls.ENDPOINTS:
            return path
        if path.startswith("/predict/"):
            return "/predict"
        return "/v1/models" if path.startswith("/v1/models/") else "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = self.endpoint(scope["path"])
            self.metrics.request(endpoint, status, time.perf_counter() - start)


def error_body(path: str, status: int, message: str) -> dict:
    """`{"error": message}`; under /v1/ OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
    the one whose message OpenAI's clients put in their exceptions."""
    if not path.startswith("/v1/"):
        return {"error": message}
    kind = "server_error" if status >= 500 else "authentication_error" if status == 401 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def answer(scope, send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error (`error_body`) straight from ASGI middleware."""
    body = json.dumps(error_body(scope["path"], status, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ReadBody:
    """Reads each request's whole body before the app sees it, so that
    - a body over `max_bytes` is answered 413 before any of it is parsed (at once when its
      Content-Length says so, else as soon as that many bytes have come);
    - a body not fully received within `timeout_s` (a stalled or trickling client) is answered 408;
    - both close the connection, which the client may still be writing to;
    - the JSON endpoints read the body as JSON whatever its Content-Type says (`curl -d` sends
      application/x-www-form-urlencoded, which FastAPI would hand over as raw bytes)."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        close = {"Connection": "close"}
        too_big = (
            f"the request body is over {self.max_bytes:,} bytes, this server's limit (--max-body-mb); "
            "send fewer or shorter texts per request"
        )
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await answer(scope, send, 413, too_big, close)
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_s)
        except asyncio.TimeoutError:
            return await answer(
                scope,
                send,
                408,
                f"the request body did not arrive within {self.timeout_s:g} s; send the whole body at once",
                close,
            )
        if body is None:  # the client went away
            return
        if len(body) > self.max_bytes:
            return await answer(scope, send, 413, too_big, close)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await answer(scope, send, 400, f"the body is not UTF-8 text (byte {e.start}); send JSON in UTF-8")
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        if body:
            headers.append((b"content-type", b"application/json"))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:  # later calls: wait for the client's disconnect, as the app expects
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)

    async def _read(self, receive) -> bytes | None:
        """The body, or None if the client disconnected; stops reading past max_bytes."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes or not message.get("more_body", False):
                return b"".join(chunks)


OPEN_PATHS = ("/health", "/", "/docs", "/openapi.json")  # and the docs' files under /docs/


class RequireKey:
    """With an API key: 401 for every request outside OPEN_PATHS that lacks `Authorization: Bearer KEY`,
    checked before the body is read."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith("/docs/"):
            return await self.app(scope, receive, send)
        scheme, _, key = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and secrets.compare_digest(key.strip(), self.key):
            return await self.app(scope, receive, send)
        said = "a wrong API key" if key else "no API key"
        await answer(
            scope,
            send,
            401,
            f"this server needs an API key and the request has {said}: send the header "
            "`Authorization: Bearer KEY` with the key given to `bertkit serve --api-key`",
            {"WWW-Authenticate": "Bearer"},
        )


class Cors(CORSMiddleware):
    """Starlette's CORS middleware; a refused preflight says why in the server's error shape."""

    def preflight_response(self, request_headers):
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        origins = ", ".join(self.allow_origins) or "none"
        return JSONResponse(
            {
                "error": f"{response.body.decode()} (origin {request_headers.get('origin')!r}); "
                f"this server allows the origins {origins} (--cors-origin), the methods "
                "GET and POST and the headers Authorization and Content-Type"
            },
            status_code=400,
            headers=headers,
        )


def swagger_files() -> str | None:
    """The folder of Swagger UI's JS and CSS in the installed swagger-ui-bundle package, or None."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # optional: /docs is served only when it is installed
    except ImportError:
        return None
    return str(swagger_ui_path)

"""`bertkit serve`: sentence vectors, similarity and fine-tuned predictions over HTTP (FastAPI).

Endpoints: GET / (a small web page over the API, page.html), POST /encode, POST /similarity,
POST /search (over an index from `bertkit index build`), POST /predict/{task}, GET /health,
GET /metrics, and /docs (Swagger UI, served from the installed swagger-ui-bundle package: no CDN).
For clients written for other servers: OpenAI's POST /v1/embeddings and GET /v1/models, and
text-embeddings-inference's POST /embed (schemas.py has every request and answer). Every model sits
behind a `Batcher` (see batcher.py), so concurrent requests share forward passes and big requests
take turns with small ones, whichever API they came through. Every error is JSON `{"error": "..."}`
saying what to send instead (under /v1/ in OpenAI's shape, see `error_body`);
only a model failure (500) and a full queue (503, with Retry-After) are 5xx.

Around the app, outermost first: CountRequests (metrics), CORS (only with --cors-origin), RequireKey
(only with --api-key), ReadBody (size cap, read timeout, JSON whatever the Content-Type): http.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles

from bertkit.data.collate import sorted_batches
from bertkit.encode.batcher import Batcher, Metrics, QueueFull
from bertkit.encode.encoder import MAX_PADDING, Encoder, as_layers
from bertkit.encode.http import Cors, CountRequests, ReadBody, RequireKey, error_body, swagger_files
from bertkit.encode.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    EncodeRequest,
    EncodeResponse,
    EncoderInfo,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
    PredictRequest,
    PredictResponse,
    SearchRequest,
    SearchResponse,
    SimilarityRequest,
    SimilarityResponse,
)
from bertkit.encode.tokens import TokenVectors
from bertkit.generate import GenerateOptions, generate_texts
from bertkit.inference import Loaded, run_examples, with_inputs
from bertkit.onnx_model import OnnxModel
from bertkit.search.index import MAX_K, Index, results

log = logging.getLogger("bertkit")


@dataclass
class Limits:
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 2048
    max_queue: int = 1024
    max_texts: int = 256
    max_chars: int = 20_000
    retry_after_s: int = 1
    max_body_mb: float | None = None  # None: max_texts texts of max_chars 4-byte characters, plus 1 MB
    body_timeout_s: float = 30.0  # a body not fully received by then is answered 408

    @property
    def max_body_bytes(self) -> int:
        if self.max_body_mb is not None:
            return int(self.max_body_mb * 1_000_000)
        return self.max_texts * self.max_chars * 4 + 1_000_000


@dataclass
class Access:
    """Who may call the server: with `api_key`, every request but OPEN_PATHS must carry
    `Authorization: Bearer KEY`; browsers on `cors_origins` may call it from their pages."""

    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_PIECES = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")  # what the tokenizer splits before WordPiece


def estimate_tokens(text: str, max_length: int) -> int:
    """About the tokens of `text` cut at `max_length`, for the batcher's token budget: its words, CJK
    characters and punctuation marks plus [CLS] and [SEP] (MR sentences have 1.10x that many tokens,
    Chinese text exactly that many). Tokenizing instead would hold the event loop for seconds on a
    request of long texts; this reads at most 6 characters per token of the limit."""
    return min(len(_PIECES.findall(text, 0, 6 * max_length)) + 2, max_length)


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection. The body was read already (`ReadBody`), so the
    server's next message is the disconnect; waiting for it costs nothing, where polling
    `is_disconnected` for every queued request woke the event loop hundreds of times a second and
    held the GIL the model's thread needs between operators."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# --- Engines: what a batch of items becomes (run in the batcher's worker thread) ------------------------


class Want(NamedTuple):
    """What a text becomes: its sentence vector, pooled, its layers joined and normalised so; with pooling
    "none" its token (or word) vectors, a `TokenVectors`."""

    pooling: str
    layers: tuple[int, ...]
    combine: str
    normalize: bool
    words: bool = False
    specials: bool = False


class EncodeEngine:
    """Items (text, Want) -> float32 vectors; one forward pass per length-sorted chunk, each row pooled its
    own way, so requests with different options still share batches. An item's text may come as its
    token ids already (`tokenize`), for the endpoints that count tokens before they queue. Token vectors
    (pooling "none") are computed per group of like items, by `Encoder.encode_tokens`."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder
        self.defaults = {
            "pooling": encoder.pooling,
            "layer": encoder.layer,
            "layer_combine": encoder.layer_combine,
            "normalize": encoder.normalize,
        }
        self.num_layers = encoder.config.num_hidden_layers
        self.dim, self.max_length = encoder.dim, encoder.max_length
        self.dense_width = encoder.dense_width
        model = encoder.model
        self.last_layer_only = isinstance(model, OnnxModel)  # an exported graph: no hidden states
        self.has_pooler = (
            "pooler_output" in model.names
            if isinstance(model, OnnxModel)
            else getattr(model, "pooler", None) is not None
        )

    def tokenize(self, texts: list[str], truncate: bool = True) -> list[list[int]]:
        """Token ids of each text as the model reads them, [CLS] and [SEP] included: cut to max_length,
        or with `truncate=False` whole, however long (for a caller that refuses long texts)."""
        if truncate:
            return self.encoder.tokenize(texts)
        encodings = self.encoder.tokenizer.encode_batch(texts, max_length=None, truncation="do_not_truncate")
        return [e.ids for e in encodings]

    def cost(self, item: tuple[str | list[int], Want]) -> int:
        text = item[0]
        return len(text) if isinstance(text, list) else estimate_tokens(text, self.max_length)

    @torch.inference_mode()
    def __call__(self, items: list[tuple[str | list[int], Want]]) -> list[np.ndarray | TokenVectors]:
        enc = self.encoder
        out: list = [None] * len(items)
        by_want: dict[Want, list[int]] = {}
        for i, (_, want) in enumerate(items):
            by_want.setdefault(want, []).append(i)
        for want, group in by_want.items():
            if want.pooling == "none":
                texts = [str(items[i][0]) for i in group]  # /encode sends texts, never token ids
                records = enc.encode_tokens(texts, want.words, want.specials, want.layers, want.combine)
                for i, record in zip(group, records):
                    out[i] = record
        ids: dict[int, list[int]] = {}  # the sentence items' token ids
        new: dict[int, str] = {}  # their texts not tokenized yet
        for i, (text, want) in enumerate(items):
            if want.pooling == "none":
                continue
            if isinstance(text, list):
                ids[i] = text
            else:
                new[i] = text
        ids.update(zip(new, enc.tokenize(list(new.values())) if new else []))
        rest = sorted(ids)
        for batch in sorted_batches([len(ids[i]) for i in rest], enc.batch_size, max_padding=MAX_PADDING):
            chunk = [rest[b] for b in batch]
            deep = any(items[i][1].layers != (-1,) for i in chunk)
            result, mask = enc.run([ids[i] for i in chunk], hidden_states=deep)
            groups: dict[Want, list[int]] = {}  # rows of the chunk that want the same vector
            for row, i in enumerate(chunk):
                groups.setdefault(items[i][1], []).append(row)
            for want, rows in groups.items():
                vectors = enc.vectors(result, mask, want.pooling, want.layers, want.normalize, rows, want.combine)
                for row, v in zip(rows, vectors.cpu().numpy()):
                    out[chunk[row]] = v
        return out  # every item was filled


def _floats(vectors: np.ndarray, encoding: str) -> list | str:
    """A float32 array as JSON numbers, or as one base64 string of little-endian float32, row-major."""
    if encoding == "base64":
        return base64.b64encode(vectors.astype("<f4").tobytes()).decode("ascii")
    return vectors.tolist()


def _token_result(record: TokenVectors, encoding: str) -> dict:
    vectors = record.vectors
    return {
        "tokens": record.tokens,
        "spans": [list(s) for s in record.spans],
        "vectors": _floats(vectors, encoding),
        "shape": list(vectors.shape),
    }


class PredictEngine:
    """Inputs -> the task's predictions, as `bertkit predict` makes them (same featurize and decode)."""

    def __init__(self, run: Loaded, batch_size: int = 64):
        self.run, self.task, self.batch_size = run, run.fine_tuned, batch_size

    def cost(self, example: dict) -> int:
        """Estimated tokens of the example's texts; a long QA context counts once, not per window."""
        text = " ".join(example[k] for k in ("text", "text_b", "question", "context") if example.get(k))
        return estimate_tokens(text, self.run.max_length)

    def examples(self, inputs: list[dict]) -> list[dict]:
        """The task's examples for request inputs (as `read_inputs` builds them from a file)."""
        return [self.task.example(record, n, "request") for n, record in enumerate(inputs)]

    def __call__(self, examples: list[dict]) -> list[dict]:
        return with_inputs(examples, run_examples(self.run, examples, self.batch_size))


USAGE = {
    "/encode": '{"texts": ["a sentence", ...], "pooling": "mean", "normalize": true, "encoding": "float"} '
    '(token vectors: "pooling": "none", "words": true; several layers: "layer": [-2, -1])',
    "/v1/embeddings": '{"input": ["a sentence", ...], "model": "NAME", "encoding_format": "float"}',
    "/embed": '{"inputs": ["a sentence", ...], "normalize": true, "truncate": false}',
    "/similarity": '{"pairs": [["a", "b"], ...]} or {"query": "q", "texts": ["a", ...]}',
    "/search": '{"query": "a text", "k": 10} or {"queries": ["a text", ...], "k": 10}',
    "/predict": '{"texts": ["a text", ...]} or {"inputs": [{"text": "a", "text_b": "b"}]} '
    '(qa: {"inputs": [{"question": "q", "context": "c"}]}; seq2seq: {"inputs": [{"source": "s"}]})',
    "/generate": '{"sources": ["a text", ...], "strategy": "beam", "num_beams": 4, "max_new_tokens": 64}',
}


def _usage(path: str) -> str:
    key = next((k for k in ("/predict", "/generate") if path.startswith(k)), path)
    key = "/predict" if key in ("/fill-mask", "/nsp") else key
    return USAGE.get(key, "")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(text: str, where: str) -> None:
    """JSON's \\ud800-style escapes can carry half a UTF-16 pair, which no tokenizer can read."""
    bad = _SURROGATE.search(text)
    if bad:
        raise ApiError(
            400,
            f"{where} holds a lone UTF-16 surrogate (U+{ord(bad.group()):04X}) at character "
            f"{bad.start()}; send valid Unicode (escape a character outside the BMP as a pair)",
        )


def _check_texts(texts: list[str], limits: Limits, field: str = "texts", key: str | None = None) -> None:
    """Count, length and Unicode of a request's texts; `key` names the field of each input they come from."""
    suffix = f".{key}" if key else ""
    if not texts:
        raise ApiError(400, f"`{field}` is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise ApiError(
            413,
            f"{len(texts)} texts in one request; send at most {limits.max_texts} "
            "(split the list into several requests)",
        )
    if len(texts) > limits.max_queue:
        raise ApiError(413, f"{len(texts)} texts is more than the server queues ({limits.max_queue}); send fewer")
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            raise ApiError(
                413,
                f"{field}[{i}]{suffix} has {len(t)} characters; the limit is {limits.max_chars} "
                "(cut the text, or start the server with a larger --max-chars)",
            )
        if not t.strip():
            raise ApiError(400, f"{field}[{i}]{suffix} is empty; send non-empty texts")
        _check_unicode(t, f"{field}[{i}]{suffix}")


# --- The app ------------------------------------------------------------------------------------------

# what every endpoint may answer besides its 200, for the OpenAPI schema
_ERROR_CODES = (
    (400, "a text the model cannot read (empty, not Unicode, too many tokens) or an option it cannot honour"),
    (401, "the server needs an API key (`Authorization: Bearer KEY`)"),
    (404, "no such model or task on this server"),
    (408, "the body did not arrive within --body-timeout-s"),
    (413, "over a limit: --max-texts, --max-chars, --max-body-mb, or the model's tokens"),
    (422, "a body of the wrong shape; the message says what to send"),
    (500, "the model failed on the batch; the server carries on"),
    (503, "the queue is full: retry after the Retry-After header's seconds"),
)
ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse, "description": d} for c, d in _ERROR_CODES}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": OpenAIErrorResponse, "description": d} for c, d in _ERROR_CODES
}


def create_app(
    encoder: Encoder | None,
    predictors: dict[str, PredictEngine] | None = None,
    limits: Limits | None = None,
    encode_engine=None,
    access: Access | None = None,
    model_name: str = "encoder",
    index: Index | None = None,
) -> FastAPI:
    """The FastAPI app; `encode_engine` replaces the engine built from `encoder` (tests use slow stubs).
    `model_name` is the encoder's name in the OpenAI-compatible API (`model`, GET /v1/models). `index`
    is searched by POST /search, its queries encoded with the settings it was built with; the caller
    checks that `encoder` is its model (`bertkit.search.build.check_model`)."""
    limits, access = limits or Limits(), access or Access()
    predictors = predictors or {}
    metrics = Metrics()
    engine = encode_engine or (EncodeEngine(encoder) if encoder is not None else None)
    batchers = {}

    def batcher(run, name):
        return Batcher(
            run, limits.max_batch, limits.max_wait_ms, limits.max_queue, metrics, name, limits.max_batch_tokens
        )

    if engine is not None:
        batchers["encode"] = batcher(engine, "encoder")
    for name, p in predictors.items():
        batchers[f"predict/{name}"] = batcher(p, name)
    metrics.queue_depth = lambda: sum(b.pending for b in batchers.values())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for b in batchers.values():
            b.start()
        yield
        for b in batchers.values():  # uvicorn has finished the requests in flight; drain what is queued
            await b.stop()

    app = FastAPI(
        title="bertkit",
        description="BERT sentence vectors and fine-tuned predictions",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.metrics, app.state.batchers, app.state.limits, app.state.access = metrics, batchers, limits, access

    # add_middleware wraps what is there: the last added runs first
    app.add_middleware(ReadBody, max_bytes=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    if access.api_key:
        app.add_middleware(RequireKey, api_key=access.api_key)
    if access.cors_origins:
        app.add_middleware(
            Cors,
            allow_origins=list(access.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(CountRequests, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        headers = {"Retry-After": str(limits.retry_after_s)} if e.status == 503 else None
        return JSONResponse(error_body(request.url.path, e.status, e.message), status_code=e.status, headers=headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):  # a server bug: still JSON, still a message, still alive
        log.exception("%s %s failed", request.method, request.url.path)
        message = f"internal error: {type(e).__name__}: {e}"
        return JSONResponse(error_body(request.url.path, 500, message), status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):  # the router's 404 and 405, a body it cannot parse
        path, method = request.url.path, request.method
        if e.status_code == 404:
            message = (
                f"there is no {path}: the endpoints are POST /encode, /similarity, /search, /predict/TASK, "
                "/v1/embeddings, /embed and GET /, /health, /metrics, /v1/models, /docs"
            )
        elif e.status_code == 405:
            allowed = (e.headers or {}).get("Allow", "another method")
            message = f"{path} does not take {method}: use {allowed}"
            if _usage(path):
                message += f" with a JSON body like {_usage(path)}"
        else:
            message = f"{e.detail}; send {_usage(path)}" if _usage(path) else str(e.detail)
        return JSONResponse(error_body(path, e.status_code, message), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        problems = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            if err.get("type") == "json_invalid":
                problems.append("the body is not valid JSON")
            elif err.get("type") == "value_error":  # schemas.py's own checks: their message names the field
                problems.append(str(err.get("msg")).removeprefix("Value error, "))
            elif where == "body":
                problems.append("the body must be a JSON object")
            elif err.get("type") == "extra_forbidden":
                problems.append(f"unknown field `{where}`")
            else:
                problems.append(f"`{where}`: {err.get('msg')}")
        message = "; ".join(dict.fromkeys(problems))
        message = f"{message}; send {_usage(request.url.path)}"
        return JSONResponse(error_body(request.url.path, 422, message), status_code=422)

    async def run(key: str, items: list, request: Request | None = None) -> list:
        """The batcher's results for `items`; if the client disconnects while they wait, the job is
        cancelled, so the batcher skips it instead of computing vectors nobody will read."""
        job = asyncio.ensure_future(batchers[key].submit(items))
        gone = asyncio.ensure_future(_disconnect(request)) if request is not None else None
        try:
            if gone is not None:
                done, _ = await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
                if job not in done:
                    job.cancel()
                    raise ApiError(499, "the client closed the connection before the answer was ready")
            return await job
        except ApiError:
            raise
        except QueueFull as e:
            raise ApiError(503, f"the server is busy ({e}); retry after {limits.retry_after_s} s") from e
        except Exception as e:  # noqa: BLE001 - a model failure answers 500 and the server carries on
            log.exception("%s failed", key)
            raise ApiError(500, f"the model failed on this batch: {type(e).__name__}: {e}") from e
        finally:
            if gone is not None:
                gone.cancel()
            if not job.done():  # the handler itself was cancelled
                job.cancel()

    def encode_items(texts, pooling, layer, normalize, layer_combine=None, words=False, specials=False):
        if engine is None:
            raise ApiError(404, "no encoder is loaded: start the server with --model DIR")
        defaults = getattr(engine, "defaults", {"pooling": "cls", "layer": -1, "normalize": False})
        layers = as_layers(defaults["layer"] if layer is None else layer)
        if not layers:
            raise ApiError(422, "`layer` is an empty list: send a layer, or several, e.g. [-4, -3, -2, -1]")
        n = getattr(engine, "num_layers", None)
        for one in layers:
            if n is not None and not -(n + 1) <= one <= n:
                raise ApiError(422, f"layer {one} does not exist: send 0 (embeddings) to {n}, or -1 to -{n + 1}")
        if n is not None:
            layers = tuple(-1 if one == n else one for one in layers)  # the top layer is the model's output
        if getattr(engine, "last_layer_only", False) and layers != (-1,):
            raise ApiError(
                422,
                f"layer {layer}: this server runs an ONNX graph that returns the last layer "
                "only; send layer -1 (or start the server with --backend torch)",
            )
        combine = layer_combine or defaults.get("layer_combine", "concat")
        pooling = pooling or defaults["pooling"]
        if pooling == "none" and normalize:
            raise ApiError(422, 'token vectors are the raw hidden states: leave out `normalize` with pooling "none"')
        if pooling == "none" and words and specials:
            raise ApiError(422, "`words` are the text's own, without [CLS] and [SEP]: leave out `specials`")
        if pooling != "none" and (words or specials):
            raise ApiError(422, '`words` and `specials` are for token vectors: send them with "pooling": "none"')
        if pooling == "pooler" and (layers != (-1,) or not getattr(engine, "has_pooler", True)):
            raise ApiError(
                422, 'pooling "pooler" needs the model\'s pooler and layer -1; send "cls", "mean" or "max", or layer -1'
            )
        dense_width = getattr(engine, "dense_width", None)
        if pooling != "none" and dense_width is not None and combine == "concat" and len(layers) > 1:
            raise ApiError(
                422,
                f"this model's Dense projection reads {dense_width}-wide vectors: send "
                '"layer_combine": "mean" with several layers, or one layer',
            )
        if pooling == "none":
            normalize = False
        want = Want(
            pooling, layers, combine, defaults["normalize"] if normalize is None else normalize, words, specials
        )
        return [(t, want) for t in texts]

    @app.post("/encode", response_model=EncodeResponse, responses=ERRORS, response_model_exclude_none=True)
    async def encode(body: EncodeRequest, request: Request):
        _check_texts(body.texts, limits)
        options = (body.layer_combine, body.words, body.specials)
        items = encode_items(body.texts, body.pooling, body.layer, body.normalize, *options)
        results = await run("encode", items, request)
        if items[0][1].pooling == "none":
            return {"results": [_token_result(r, body.encoding) for r in results], "dtype": "float32"}
        vectors = np.stack(results)
        return {"vectors": _floats(vectors, body.encoding), "shape": list(vectors.shape), "dtype": "float32"}

    async def embed(
        texts: list[str],
        request: Request,
        field: str,
        normalize: bool | None,
        truncate: bool,
        too_long: int,
        truncate_how: str = '"truncate": true',
    ) -> tuple[np.ndarray, list[int]]:
        """Vectors of `texts` with the model's pooling, through the same batcher as /encode, and the
        tokens the model read for each. The texts are tokenized first, off the event loop, to count
        their tokens; one over the model's limit is answered `too_long` unless `truncate` cuts it."""
        _check_texts(texts, limits, field)
        items = encode_items(texts, None, None, normalize)
        assert engine is not None  # encode_items refuses a server without one
        ids = await asyncio.to_thread(engine.tokenize, texts, truncate)
        for i, seq in enumerate(ids):
            if len(seq) > engine.max_length:
                raise ApiError(
                    too_long,
                    f"{field}[{i}] has {len(seq)} tokens and model `{model_name}` reads at most "
                    f"{engine.max_length}: split the text, or send {truncate_how} to embed its first "
                    f"{engine.max_length} tokens",
                )
        vectors = np.stack(await run("encode", [(seq, *item[1:]) for seq, item in zip(ids, items)], request))
        return vectors, [len(seq) for seq in ids]

    card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "bertkit"}

    def check_model(name: str | None, dimensions: int | None = None) -> None:
        """An encoder is served, under `name` if one is given, and gives `dimensions`-long vectors."""
        if engine is None:
            raise ApiError(404, "no encoder is loaded: start the server with --model DIR")
        if name is not None and name != model_name:
            raise ApiError(
                404,
                f"model `{name}` is not served here: send `{model_name}` (GET /v1/models lists it), "
                f"or start the server with --model-name {name}",
            )
        dim = getattr(engine, "dim", None)
        if dimensions is not None and dimensions != dim:
            raise ApiError(
                400,
                f"`dimensions` {dimensions}: model `{model_name}` gives {dim}-dimensional vectors and was "
                f"not trained to be cut shorter; leave `dimensions` out or send {dim}",
            )

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=OPENAI_ERRORS)
    async def openai_embeddings(body: EmbeddingsRequest, request: Request):
        """OpenAI's embeddings API: `OpenAI(base_url=URL + "/v1", api_key=KEY).embeddings.create(...)`."""
        check_model(body.model, body.dimensions)
        texts = [body.input] if isinstance(body.input, str) else body.input
        how = '"truncate": true (with the openai package: extra_body={"truncate": True})'
        vectors, tokens = await embed(texts, request, "input", None, body.truncate, 400, how)
        if body.encoding_format == "base64":  # what the openai package asks for unless told otherwise
            data: list = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            data = vectors.tolist()
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": model_name,
            "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)},
        }

    @app.get("/v1/models", response_model=ModelList, responses=OPENAI_ERRORS)
    async def openai_models():
        return {"object": "list", "data": [card] if engine is not None else []}

    @app.get("/v1/models/{model}", response_model=ModelCard, responses=OPENAI_ERRORS)
    async def openai_model(model: str):
        check_model(model)
        return card

    @app.post("/embed", response_model=EmbedResponse, responses=ERRORS)
    async def tei_embed(body: EmbedRequest, request: Request):
        """text-embeddings-inference's /embed: one vector per input, pooled as the model was trained."""
        check_model(None, body.dimensions)
        if body.truncation_direction == "Left":
            raise ApiError(
                422, 'truncation_direction "Left" is not supported: send "Right" (a long text loses its end)'
            )
        if body.prompt_name is not None:
            raise ApiError(
                422, f"prompt_name {body.prompt_name!r}: this server has no prompts; put it in front of each text"
            )
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        vectors, _ = await embed(texts, request, "inputs", body.normalize, body.truncate, 413)
        return vectors.tolist()

    @app.post("/similarity", response_model=SimilarityResponse, responses=ERRORS)
    async def similarity(body: SimilarityRequest, request: Request):
        if body.pairs is not None and (body.query is None and body.texts is None):
            flat = [t for pair in body.pairs for t in pair]
            _check_texts(flat, limits, "pairs")
        elif body.pairs is None and body.query is not None and body.texts is not None:
            flat = [body.query, *body.texts]
            _check_texts(body.texts, limits)
            _check_texts(flat, limits, "query+texts")
        else:
            raise ApiError(422, f"send either `pairs` or `query` with `texts`: {USAGE['/similarity']}")
        v = np.stack(await run("encode", encode_items(flat, body.pooling, body.layer, True), request))
        if body.pairs is not None:
            scores = (v[0::2] * v[1::2]).sum(-1)
        else:
            scores = v[1:] @ v[0]
        return {"scores": [float(s) for s in scores]}

    @app.post("/search", response_model=SearchResponse, responses=ERRORS, response_model_exclude_none=True)
    async def search(body: SearchRequest, request: Request):
        """The indexed texts nearest to each query, as `bertkit search` finds them."""
        if index is None:
            raise ApiError(
                404, "no index is loaded: start the server with --model DIR --index IDX (from `bertkit index build`)"
            )
        if (body.query is None) == (body.queries is None):
            raise ApiError(422, f"send either `query` or `queries`: {USAGE['/search']}")
        if body.query is not None and not body.query.strip():
            raise ApiError(400, "`query` is empty: send the text to search for")
        queries = [body.query] if body.query is not None else body.queries or []
        _check_texts(queries, limits, "query" if body.query is not None else "queries")
        if not 1 <= body.k <= MAX_K:
            raise ApiError(422, f"`k` is {body.k}: send 1 to {MAX_K} hits per query")
        meta = index.meta
        items = encode_items(queries, meta["pooling"], meta["layer"], meta["normalize"])
        vectors = np.stack(await run("encode", items, request))

        def find():  # [Q, D] against [N, D]: in a thread, so the event loop keeps serving
            return index.hits(*index.search(vectors, body.k, exact=body.exact))

        return {"results": results(queries, await asyncio.to_thread(find))}

    def only_task_of(kind: str) -> str:
        """The one loaded task of this kind (fill-mask, nsp), for the paths that name the kind, not the task."""
        names = [n for n, q in predictors.items() if q.task.name == kind]
        if not names:
            raise ApiError(404, f"no {kind} task is loaded: start the server with --task NAME={kind}:DIR")
        if len(names) > 1:
            raise ApiError(422, f"{len(names)} {kind} tasks are loaded ({', '.join(names)}): use /predict/NAME")
        return names[0]

    @app.post("/fill-mask", response_model=PredictResponse, responses=ERRORS)
    async def fill_mask(body: PredictRequest, request: Request):
        """The top tokens of each [MASK], from the one fill-mask task loaded (as /predict/NAME)."""
        return await predict(only_task_of("fill-mask"), body, request)

    @app.post("/nsp", response_model=PredictResponse, responses=ERRORS)
    async def nsp(body: PredictRequest, request: Request):
        """is_next / not_next for sentence pairs, from the one nsp task loaded (as /predict/NAME)."""
        return await predict(only_task_of("nsp"), body, request)

    @app.post("/predict/{task}", response_model=PredictResponse, responses=ERRORS)
    async def predict(task: str, body: PredictRequest, request: Request):
        if task not in predictors:
            loaded = ", ".join(predictors) or "none (start the server with --task NAME=DIR)"
            raise ApiError(404, f"no task `{task}` is loaded; loaded tasks: {loaded}")
        p = predictors[task]
        if (body.texts is None) == (body.inputs is None):
            raise ApiError(422, f"send either `texts` or `inputs`: {USAGE['/predict']}")
        required, optional = p.task.inputs, p.task.optional_inputs
        shape = "{" + ", ".join(f'"{f}": "..."' for f in required) + "}"
        if body.texts is not None and required != ("text",):
            raise ApiError(
                422, f'task `{task}` takes inputs with {" and ".join(required)}: send {{"inputs": [{shape}, ...]}}'
            )
        inputs = (
            [{"text": t} for t in body.texts]
            if body.texts is not None
            else [i.model_dump(exclude_none=True) for i in body.inputs or []]
        )
        for n, i in enumerate(inputs):
            if any(not isinstance(i.get(f), str) for f in required):
                raise ApiError(422, f"inputs[{n}] needs {' and '.join(f'`{f}`' for f in required)}: send {shape}")
            unknown = sorted(set(i) - set(required) - set(optional))
            if unknown:
                raise ApiError(
                    422,
                    f"inputs[{n}] has `{unknown[0]}`, which task `{task}` does not take; its inputs "
                    f"hold {', '.join(required + optional)}",
                )
        for f in required:
            if body.texts is not None:
                _check_texts([i[f] for i in inputs], limits)
            else:
                _check_texts([i[f] for i in inputs], limits, "inputs", f)
        for n, i in enumerate(inputs):  # text_b, question, id: the fields _check_texts did not read
            for key, value in i.items():
                if isinstance(value, str):
                    _check_unicode(value, f"inputs[{n}].{key}")
        return {"predictions": await run(f"predict/{task}", p.examples(inputs), request)}

    @app.post("/generate/{task}", response_model=GenerateResponse, responses=ERRORS)
    async def generate(task: str, body: GenerateRequest):
        """Targets from a seq2seq model (`bertkit generate`'s strategies), one source at a time in a thread."""
        p = predictors.get(task)
        if p is None or p.task.name != "seq2seq":
            seq2seq = ", ".join(n for n, q in predictors.items() if q.task.name == "seq2seq") or "none"
            raise ApiError(404, f"no seq2seq task `{task}` is loaded; seq2seq tasks: {seq2seq}")
        _check_texts(body.sources, limits, "sources")
        opts = GenerateOptions(**body.model_dump(exclude={"sources"}))
        return {"generated": await asyncio.to_thread(generate_texts, p.run, body.sources, opts)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((resources.files("bertkit.encode") / "page.html").read_text(encoding="utf-8"))

    swagger = swagger_files()
    if swagger is not None:
        app.mount("/docs/static", StaticFiles(directory=swagger), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if swagger is None:
            raise ApiError(404, "the API docs need the swagger-ui-bundle package: pip install 'bertkit[serve]'")
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="bertkit API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

    def openapi() -> dict:
        """FastAPI's schema, with the bearer key for Swagger's Authorize button when one is needed."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if access.api_key:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema

    @app.get("/health", response_model=HealthResponse)
    async def health():
        encoder_info = (
            EncoderInfo(name=model_name, **getattr(engine, "defaults", {}), dim=getattr(engine, "dim", None))
            if engine is not None
            else None
        )
        return HealthResponse(
            status="ok",
            tasks={n: p.task.name for n, p in predictors.items()},
            queue_depth=metrics.queue_depth(),
            api_key=bool(access.api_key),
            encoder=encoder_info,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app

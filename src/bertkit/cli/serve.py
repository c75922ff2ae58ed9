"""bertkit serve: an HTTP server for sentence vectors, similarity and fine-tuned predictions.

    bertkit serve --model minilm --task sentiment=runs/mr --task ner=runs/wnut --port 8000
    bertkit serve --model minilm --index idx   # POST /search over an index of `bertkit index build`

Docs at http://HOST:PORT/docs; see bertkit.encode.server for the endpoints, OpenAI's /v1/embeddings
and text-embeddings-inference's /embed among them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from bertkit.config import help_text, option, parse_args
from bertkit.encode import Encoder
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.inference import BACKENDS, load_task
from bertkit.search.build import check_model
from bertkit.search.index import Index

log = logging.getLogger("bertkit")


@dataclass
class ServeConfig:
    model: str | None = option(
        None, "sentence-vector model directory or fetched name, e.g. minilm (POST /encode, /similarity)"
    )
    model_name: str | None = option(
        None,
        "the --model's name in the OpenAI-compatible API (GET /v1/models, `model` in "
        "POST /v1/embeddings); default: the model directory's name, e.g. minilm",
    )
    index: str | None = option(
        None,
        "a search index from `bertkit index build` with --model, for POST /search (its model must be --model)",
    )
    task: list[str] = option(
        [],
        "fine-tuned models as NAME=DIR (repeat --task, or comma-separate): POST /predict/NAME (and, for a "
        "seq2seq model, POST /generate/NAME); NAME=fill-mask:DIR or NAME=nsp:DIR serves a pretrained model's heads",
    )
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
    port: int = option(8000, "port to listen on", at_least=0, at_most=65535)
    backend: str = option(
        "torch",
        "inference backend: onnx / onnx-int8 run the graphs `bertkit export` wrote "
        "into the --model and --task directories (CPU)",
        choices=BACKENDS,
    )
    max_batch: int = option(64, "most texts in one batched forward pass", at_least=1)
    max_batch_tokens: int = option(
        2048,
        "most tokens (estimated from words and punctuation) in one batched "
        "model call: big requests are split into batches this size and take turns "
        "with small ones, so a small request waits a few batches, not a big one's "
        "whole run",
        at_least=1,
    )
    max_wait_ms: float = option(5.0, "how long the first request of a batch waits for others", at_least=0)
    max_queue: int = option(1024, "texts queued per model before requests are answered 503 (Retry-After)", at_least=1)
    max_texts: int = option(256, "most texts in one request", at_least=1)
    max_chars: int = option(20_000, "most characters in one text", at_least=1)
    batch_size: int = option(32, "texts per forward pass inside a batch (sorted by length)", at_least=1)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    max_body_mb: float | None = option(
        None,
        "largest request body in MB, answered 413 before it is parsed "
        "(default: room for --max-texts texts of --max-chars 4-byte characters, "
        "plus 1 MB)",
        above=0,
    )
    body_timeout_s: float = option(
        30.0, "seconds a client has to send its whole request body (then 408 and the connection closed)", above=0
    )
    api_key: str | None = option(
        None,
        "clients must send `Authorization: Bearer KEY` (401 otherwise); or set "
        "the BERTKIT_API_KEY environment variable, which `ps` does not show",
    )
    cors_origin: list[str] = option(
        [],
        "a web origin (e.g. https://app.example.com) whose pages may call the "
        "server from the browser (repeat the flag for several)",
    )


SECURITY = """
Security: the server listens on 127.0.0.1 (this machine only) unless --host says otherwise. Without
--api-key (or BERTKIT_API_KEY) anyone who can reach the port can use it; with a key, every request
must carry `Authorization: Bearer KEY` (else 401), except GET /health (a load balancer's check),
GET / (the page asks for the key) and /docs with /openapi.json (the API's description, no data).
Browsers may call it from other sites' pages only for the --cors-origin origins. The server speaks
plain HTTP: to expose it beyond this machine, put it behind a TLS proxy. Request bodies are capped
(--max-body-mb, 413) and must arrive within --body-timeout-s (408)."""


def _join_repeated(argv: list[str], flag: str) -> list[str]:
    """`--task a=x --task b=y` -> `--task a=x,b=y` (the config parser keeps the last of repeated flags)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
        else:
            rest.append(arg)
        i += 1
    return rest + ([flag, ",".join(values)] if values else [])


HEAD_TASKS = ("fill-mask", "nsp")  # a pretrained model's own heads: NAME=fill-mask:DIR


def parse_tasks(specs: list[str]) -> dict[str, tuple[str, str | None]]:
    """NAME=DIR (a fine-tuned directory) or NAME=fill-mask:DIR / NAME=nsp:DIR (a pretrained model's
    heads) -> {name: (dir, task or None)}."""
    tasks: dict[str, tuple[str, str | None]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise BertkitError(
                f"--task {spec!r}: write NAME=DIR, e.g. --task sentiment=runs/mr (or NAME=fill-mask:DIR, "
                "NAME=nsp:DIR for a pretrained model's own heads)"
            )
        if name in tasks:
            raise BertkitError(
                f"--task {name} is given twice ({tasks[name][0]} and {path}); give each task its own name"
            )
        head, colon, rest = path.partition(":")
        tasks[name] = (rest, head) if colon and head in HEAD_TASKS and rest else (path, None)
    return tasks


def access_from(cfg: ServeConfig):
    """The API key (--api-key, else BERTKIT_API_KEY) and the CORS origins, checked."""
    from bertkit.encode.server import Access  # FastAPI, the `serve` extra: only when a server is built

    for origin in cfg.cors_origin:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise BertkitError(
                f"--cors-origin {origin!r}: give an origin, scheme and host (and port) without a "
                "path, e.g. --cors-origin https://app.example.com"
            )
    return Access(api_key=cfg.api_key or os.environ.get("BERTKIT_API_KEY") or None, cors_origins=tuple(cfg.cors_origin))


def build_app(cfg: ServeConfig):
    # FastAPI is the `serve` extra: imported when a server is built, so `--help` works without it
    from bertkit.encode.server import Limits, PredictEngine, create_app

    tasks = parse_tasks(cfg.task)
    access = access_from(cfg)
    if cfg.model is None and not tasks:
        raise BertkitError("nothing to serve: pass --model DIR (vectors) and/or --task NAME=DIR (predictions)")
    index = None
    if cfg.index is not None:
        if cfg.model is None:
            raise BertkitError(f"--index {cfg.index} needs the model that built it: pass --model too")
        index = Index.load(cfg.index)
        check_model(index, resolve_model(cfg.model))
    encoder = (
        Encoder(
            cfg.model,
            batch_size=cfg.batch_size,
            device=cfg.device,
            backend=cfg.backend,
            max_length=index.meta["max_length"] if index is not None else None,  # queries read as the texts were
        )
        if cfg.model
        else None
    )
    predictors = {
        name: PredictEngine(load_task(path, cfg.backend, cfg.device, head), batch_size=cfg.batch_size)
        for name, (path, head) in tasks.items()
    }
    limits = Limits(
        max_batch=cfg.max_batch,
        max_batch_tokens=cfg.max_batch_tokens,
        max_wait_ms=cfg.max_wait_ms,
        max_queue=cfg.max_queue,
        max_texts=cfg.max_texts,
        max_chars=cfg.max_chars,
        max_body_mb=cfg.max_body_mb,
        body_timeout_s=cfg.body_timeout_s,
    )
    name = cfg.model_name or (Path(cfg.model).resolve().name if cfg.model else "encoder")
    return create_app(encoder, predictors, limits, access=access, model_name=name, index=index)


def main(argv: list[str]) -> int:
    import uvicorn  # the `serve` extra: only when a server is started

    if "-h" in argv or "--help" in argv:
        print(help_text(ServeConfig, "bertkit serve") + "\n" + SECURITY)
        return 0
    argv = _join_repeated(_join_repeated(argv, "--task"), "--cors-origin")
    cfg = parse_args(ServeConfig, argv, prog="bertkit serve")
    app = build_app(cfg)
    log.info(
        "serving on http://%s:%d (docs at /docs)%s",
        cfg.host,
        cfg.port,
        "; requests need the API key" if app.state.access.api_key else "",
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=30)
    return 0

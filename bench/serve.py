"""Load and fault test of `bertkit serve` (torch, onnx and onnx-int8 backends; the ONNX graphs are
exported to runs/ on first use) against a baseline server that runs transformers once per request
(no batching), all serving MiniLM sentence vectors over HTTP on the loopback interface.

    python bench/serve.py [--duration 10] [--clients 10,50,200] [--model minilm] [--phases load,faults,big]

Each phase runs N concurrent clients for a fixed time; every client sends one real MR sentence per
request (one in five a long text: several sentences joined) and waits for the answer. Printed per
server and N: requests/s, p50/p95/p99 latency and errors by status. Then, on bertkit only:
  overload     200 clients against a queue of 32 texts: errors must be 503s only (with Retry-After)
  malformed    1 request in 5 is broken (bad JSON, wrong types, unknown fields): those get 4xx, the
               good ones still all 200
  disconnect   clients that give up after 50 ms: the server drops their queued work
               (bertkit_dropped_items_total) and answers the next clients normally
  big request  one request at the limits (256 texts of 20,000 characters) while a few clients send
               1-text requests: their latency with and without the big one running (fair scheduling
               keeps it within a few batch times instead of the big request's whole run)
Servers run in their own processes (uvicorn, 1 worker); the load generator is asyncio + httpx.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]


# ---- the baseline: what a user writes with transformers and FastAPI in ten lines ----

class Body(BaseModel):
    texts: list[str]


def baseline_app(model_dir: str):
    import torch
    from fastapi import FastAPI
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    app = FastAPI()

    @app.post("/encode")
    def encode(body: Body):  # sync: FastAPI runs it in its thread pool, one forward pass per request
        batch = tokenizer(body.texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        return {"vectors": vectors.tolist()}

    return app


def serve_baseline(model_dir: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(model_dir), host="127.0.0.1", port=port, log_level="warning")


# ---- servers in subprocesses ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model_dir: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "bertkit":
        cmd = [sys.executable, "-m", "bertkit.cli.main", "serve", "--model", model_dir, "--port", str(port), *extra]
    else:
        cmd = [sys.executable, __file__, "--baseline-server", "--model", model_dir, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.post(f"{url}/encode", json={"texts": ["warm up"]}, timeout=10).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{kind} server did not start in 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- the load ----

MALFORMED = [b'{"texts": ["unclosed"', b'{"texts": "not a list"}', b'{"texts": [1, 2]}', b'{"txt": ["typo"]}',
             b"[]", b'{"texts": []}']


async def client(http: httpx.AsyncClient, url: str, texts: list[str], deadline: float, rng: random.Random,
                 log: list, malformed_share: float = 0.0, give_up_s: float | None = None) -> None:
    while time.perf_counter() < deadline:
        bad = rng.random() < malformed_share
        body = rng.choice(MALFORMED) if bad else json.dumps({"texts": [rng.choice(texts)]}).encode()
        start = time.perf_counter()
        try:
            r = await http.post(f"{url}/encode", content=body, headers={"Content-Type": "application/json"},
                                timeout=give_up_s or 60)
            status = r.status_code
            if status == 503 and "retry-after" not in r.headers:
                status = "503 without Retry-After"
        except httpx.TimeoutException:
            status = "gave up"
        except httpx.HTTPError as e:
            status = type(e).__name__
        log.append((bad, status, time.perf_counter() - start))
        if status == 503:
            await asyncio.sleep(0.05)


async def phase(url: str, n: int, seconds: float, texts: list[str], **kw) -> dict:
    log: list = []
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits) as http:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(client(http, url, texts, deadline, random.Random(i), log, **kw) for i in range(n)))
        elapsed = time.perf_counter() - started
    good = [(s, t) for bad, s, t in log if not bad]
    ok = np.array([t for s, t in good if s == 200]) * 1000
    errors: dict = {}
    for bad, s, _ in log:
        key = f"{'malformed' if bad else 'good'} {s}"
        if bad or s != 200:
            errors[key] = errors.get(key, 0) + 1
    pct = (lambda q: float(np.percentile(ok, q))) if len(ok) else (lambda q: float("nan"))
    return {"clients": n, "requests/s": len(ok) / elapsed, "ok": len(ok), "p50_ms": pct(50), "p95_ms": pct(95),
            "p99_ms": pct(99), "errors": errors}


async def small_latency(url: str, texts: list[str], clients: int, seconds: float,
                        big: list[str] | None = None) -> tuple[np.ndarray, float]:
    """Latencies (ms) of 1-text requests sent in a loop by `clients` clients: for `seconds`, or with
    `big`, for as long as that one request (sent first, 0.5 s ahead) takes; and its time in seconds."""
    log: list = []
    done = asyncio.Event()
    big_seconds = float("nan")
    async with httpx.AsyncClient(timeout=600) as http:

        async def big_request():
            nonlocal big_seconds
            start = time.perf_counter()
            r = await http.post(f"{url}/encode", json={"texts": big, "encoding": "base64"})
            big_seconds = time.perf_counter() - start
            assert r.status_code == 200, r.text[:300]
            done.set()

        async def timer():
            await asyncio.sleep(seconds)
            done.set()

        async def small(rng: random.Random):
            if big is not None:
                await asyncio.sleep(0.5)  # the big request is in the server first
            while not done.is_set():
                start = time.perf_counter()
                r = await http.post(f"{url}/encode", json={"texts": [rng.choice(texts)]})
                assert r.status_code == 200, r.text[:300]
                log.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(timer() if big is None else big_request(), *(small(random.Random(i)) for i in range(clients)))
    return np.array(log), big_seconds


def big_request(texts: list[str], n: int, chars: int) -> list[str]:
    """`n` texts of `chars` characters each, real sentences joined."""
    rng = random.Random(1)
    out = []
    for _ in range(n):
        text = ""
        while len(text) < chars:
            text += rng.choice(texts) + " "
        out.append(text[:chars])
    return out


def latency_line(name: str, ms: np.ndarray) -> str:
    if not len(ms):
        return f"| {name} | 0 | | | |"
    return (f"| {name} | {len(ms)} | {np.percentile(ms, 50):.0f} | {np.percentile(ms, 95):.0f} | "
            f"{ms.max():.0f} |")


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def load_texts() -> list[str]:
    from bertkit.data.readers import read_texts
    from bertkit.fetch import resolve_data

    short = read_texts(resolve_data("mr", "dev"))
    rng = random.Random(0)
    long = [" ".join(rng.sample(short, 8)) for _ in range(len(short) // 4)]  # ~1 in 5 is long
    return short + long


def work_per_request(model_dir: str, texts: list[str]) -> float:
    """Mean FLOPs of one request: clients draw texts uniformly, each text is one forward pass of its
    own length (the baseline truncates at 256 tokens). Multiply-adds x 2 of the projections
    (4 H^2 per token), the feed-forward (2 H FF per token) and attention (2 n H per token)."""
    from bertkit.checkpoint import load_config
    from bertkit.tokenizer import BertTokenizer

    config = load_config(model_dir)
    H, L, FF = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    tokenizer = BertTokenizer.from_dir(model_dir)
    lengths = np.array([len(e.ids) for e in tokenizer.encode_batch(texts, max_length=256)], dtype=np.float64)
    return float(np.mean(2 * L * lengths * (4 * H * H + 2 * H * FF + 2 * lengths * H)))


def gemm_gflops() -> float:
    """fp32 GEMM rate of this machine with torch's threads (a [2048 x 384] x [384 x 1536] product, the
    feed-forward shape of a batch of MiniLM tokens), best of 10."""
    import torch

    from encode import best_seconds

    a, w = torch.randn(2048, 384), torch.randn(384, 1536)
    return 2 * 2048 * 384 * 1536 / best_seconds(lambda: torch.mm(a, w), 10) / 1e9


def row(server: str, r: dict) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "none"
    return (f"| {server} | {r['clients']} | {r['requests/s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {errors} |")


def exported(model_dir: str) -> Path:
    """The model's ONNX graphs (fp32 and int8), exported into runs/ on first use."""
    onnx_dir = ROOT / "runs" / f"{Path(model_dir).name}-onnx"
    if not (onnx_dir / "model.int8.onnx").is_file():
        from bertkit.export import export_dir

        export_dir(model_dir, onnx_dir, quantize="int8")
    return onnx_dir


def load_phase(model_dir: str, texts: list[str], levels: list[int], seconds: float) -> None:
    flops, gemm = work_per_request(model_dir, texts), gemm_gflops()
    print("| server | clients | requests/s | p50 ms | p95 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|---:|---|")
    onnx_dir = exported(model_dir)
    servers = {"transformers, per request": ("baseline", model_dir, []),
               "bertkit (torch)": ("bertkit", model_dir, []),
               "bertkit --backend onnx": ("bertkit", str(onnx_dir), ["--backend", "onnx"]),
               "bertkit --backend onnx-int8": ("bertkit", str(onnx_dir), ["--backend", "onnx-int8"])}
    results = {}
    for name, (kind, directory, extra) in servers.items():
        proc, url = start(kind, directory, extra)
        try:
            for n in levels:
                results[name, n] = asyncio.run(phase(url, n, seconds, texts))
                print(row(name, results[name, n]), flush=True)
        finally:
            stop(proc)
    print()
    for name in list(servers)[1:]:
        for n in levels:
            b, k = results["transformers, per request", n], results[name, n]
            print(f"{name}, {n} clients: {k['requests/s'] / b['requests/s']:.2f}x the baseline's throughput, "
                  f"p99 {k['p99_ms']:.0f} ms vs {b['p99_ms']:.0f} ms")
    # The ceiling: how much of the machine's GEMM rate the fp32 servers turn into model FLOPs. When the
    # baseline already gets a large share, no fp32 server can be many times faster on this machine.
    print(f"\nwork: {flops / 1e9:.2f} GFLOP per request on average; fp32 GEMM on this machine: {gemm:.0f} GFLOP/s")
    for name in list(servers)[:2]:
        for n in levels:
            rate = results[name, n]["requests/s"] * flops / 1e9
            print(f"{name}, {n} clients: {rate:.1f} GFLOP/s of model work = {100 * rate / gemm:.0f}% of the GEMM rate")
    for n in levels:
        b = results["transformers, per request", n]["requests/s"] * flops / 1e9
        print(f"{n} clients: 3x the baseline would be {3 * b:.0f} GFLOP/s of fp32 model work, "
              f"{300 * b / gemm:.0f}% of the GEMM rate")


def fault_phases(model_dir: str, texts: list[str], seconds: float) -> None:
    print("\nfaults (bertkit):\n| phase | clients | requests/s | p50 ms | p95 ms | p99 ms | errors |\n"
          "|---|---:|---:|---:|---:|---:|---|")
    proc, url = start("bertkit", model_dir, ["--max-queue", "32"])
    try:
        print(row("overload, queue of 32", asyncio.run(phase(url, 200, seconds, texts))), flush=True)
    finally:
        stop(proc)
    proc, url = start("bertkit", model_dir, [])
    try:
        print(row("1 in 5 malformed", asyncio.run(phase(url, 50, seconds, texts, malformed_share=0.2))),
              flush=True)
        computed = metric(url, "bertkit_batch_size_sum")
        gave_up = asyncio.run(phase(url, 50, seconds, texts, give_up_s=0.05))
        print(row("clients give up after 50 ms", gave_up), flush=True)
        after = asyncio.run(phase(url, 10, min(5.0, seconds), texts))
        print(row("then 10 patient clients", after), flush=True)
        dropped = metric(url, "bertkit_dropped_items_total")
        abandoned = gave_up["errors"].get("good gave up", 0)
        computed = metric(url, "bertkit_batch_size_sum") - computed
        print(f"\n{abandoned} requests abandoned by their clients: {dropped:.0f} dropped from the queue "
              f"unread, {computed:.0f} texts computed in the two phases; queue depth now "
              f"{metric(url, 'bertkit_queue_depth'):.0f}")
    finally:
        stop(proc)


def big_phase(model_dir: str, texts: list[str], seconds: float, n_big: int, chars: int, clients: int = 4) -> None:
    """Head-of-line blocking: 1-text requests timed alone, then while one big request runs."""
    big = big_request(texts, n_big, chars)
    proc, url = start("bertkit", model_dir, ["--max-texts", str(max(256, n_big)), "--max-chars", str(max(20_000, chars))])
    try:
        alone, _ = asyncio.run(small_latency(url, texts, clients, seconds))
        during, big_seconds = asyncio.run(small_latency(url, texts, clients, seconds, big))
        batches = metric(url, "bertkit_batch_size_count")
    finally:
        stop(proc)
    print(f"\nbig request (bertkit): {n_big} texts of {chars:,} characters took {big_seconds:.1f} s; "
          f"{clients} clients sent 1-text requests meanwhile ({batches:.0f} batches in all)\n"
          "| 1-text requests | count | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|")
    print(latency_line("alone", alone))
    print(latency_line("while the big request runs", during), flush=True)


def thread_cpu(pid: int) -> float:
    """CPU seconds used so far by a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_share() -> float:
    """CPU time the hypervisor gave other guests so far, in cores x seconds (/proc/stat's steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


async def light_client(host: str, port: int, texts: list[str], deadline: float, rng: random.Random,
                       log: list) -> None:
    """One keep-alive HTTP/1.1 connection sending 1-text /encode requests in a loop: a few lines of
    asyncio streams, where httpx spends ~3x the CPU per request, CPU the server's 2 cores then lack."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            body = json.dumps({"texts": [rng.choice(texts)]}).encode()
            start = time.perf_counter()
            writer.write(b"POST /encode HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            log.append((False, int(head[9:12]), time.perf_counter() - start))
    finally:
        writer.close()


async def light_phase(url: str, n: int, seconds: float, texts: list[str]) -> dict:
    host, port = url.removeprefix("http://").split(":")
    log: list = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(light_client(host, int(port), texts, deadline, random.Random(i), log) for i in range(n)))
    elapsed = time.perf_counter() - started
    ok = np.array([t for _, s, t in log if s == 200]) * 1000
    return {"requests/s": len(ok) / elapsed, "p99_ms": float(np.percentile(ok, 99)),
            "errors": sum(s != 200 for _, s, _ in log)}


def offline_phase(model_dir: str, texts: list[str], seconds: float, clients: int = 50, rounds: int = 6,
                  backend: str = "torch") -> None:
    """The server against the model's own speed, in `rounds` alternating rounds (the hypervisor takes
    from 0 to over half a core of this 2-vCPU machine from minute to minute, so each server round is
    set against the offline round just before it): `Encoder.encode` in this process on 640 texts of
    the same mix (drawn as the clients draw it, in batches of the server's --max-batch 64), then
    `bertkit serve` with `clients` light clients for `seconds`. Reports the
    server's texts/s as a share of the offline rate, its p99 against the time of one full batch, and
    the CPU the load generator took from the same 2 cores."""
    from bertkit import Encoder

    rng = random.Random(0)
    stream = [rng.choice(texts) for _ in range(640)]
    encoder = Encoder(model_dir, batch_size=32, backend=backend)
    encoder.encode(stream[:64])
    proc, url = start("bertkit", model_dir, ["--backend", backend])
    shares, p99s, offline_rates = [], [], []
    try:
        asyncio.run(light_phase(url, clients, 3, texts))  # warm up
        for r in range(rounds):
            began, part = time.perf_counter(), stream
            for i in range(0, len(part), 64):
                encoder.encode(part[i:i + 64])
            offline = len(part) / (time.perf_counter() - began)
            full_batch_ms = 64 / offline * 1000
            server_before, client_before, steal = thread_cpu(proc.pid), os.times(), steal_share()
            res = asyncio.run(light_phase(url, clients, seconds, texts))
            server_cpu, client_after = thread_cpu(proc.pid) - server_before, os.times()
            steal = steal_share() - steal
            wall = client_after.elapsed - client_before.elapsed
            client_cpu = (client_after.user + client_after.system - client_before.user - client_before.system) / wall
            shares.append(res["requests/s"] / offline)
            p99s.append(res["p99_ms"] / full_batch_ms)
            offline_rates.append(offline)
            print(f"round {r + 1}: offline {offline:.1f} texts/s; serve {res['requests/s']:.1f} texts/s "
                  f"({100 * shares[-1]:.0f}%), p99 {res['p99_ms']:.0f} ms ({p99s[-1]:.1f}x a full batch of "
                  f"{full_batch_ms:.0f} ms), errors {res['errors']}; CPU cores busy: server {server_cpu / wall:.2f}, "
                  f"load generator {client_cpu:.2f}, taken by the hypervisor {steal / wall:.2f}", flush=True)
        batch = metric(url, "bertkit_batch_size_sum") / max(1.0, metric(url, "bertkit_batch_size_count"))
    finally:
        stop(proc)
    print(f"bertkit serve --backend {backend}, {clients} clients, {seconds:g} s x {rounds} rounds (mean batch {batch:.1f} texts): "
          f"**{100 * float(np.median(shares)):.0f}% of offline** (median; rounds {', '.join(f'{100 * x:.0f}%' for x in shares)}); "
          f"p99 **{float(np.median(p99s)):.1f}x one full batch** (median)", flush=True)


PHASES = ("load", "offline", "faults", "big")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--clients", default="10,50,200")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"which to run, of {', '.join(PHASES)}")
    ap.add_argument("--big-texts", type=int, default=256, help="texts in the big request")
    ap.add_argument("--big-chars", type=int, default=20_000, help="characters per text of the big request")
    ap.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from bertkit.fetch import resolve_model

    model_dir = str(resolve_model(args.model))
    if args.baseline_server:
        return serve_baseline(model_dir, args.port)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise SystemExit(f"--phases: unknown {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    texts = load_texts()
    print(f"bench/serve.py: {len(texts)} texts, {args.duration:g} s per phase, {os.cpu_count()} CPUs, "
          f"client and servers on one machine\n")
    if "load" in phases:
        load_phase(model_dir, texts, [int(n) for n in args.clients.split(",")], args.duration)
    if "offline" in phases:
        offline_phase(model_dir, texts, args.duration)
        offline_phase(str(exported(model_dir)), texts, args.duration, backend="onnx")
    if "faults" in phases:
        fault_phases(model_dir, texts, args.duration)
    if "big" in phases:
        big_phase(model_dir, texts, args.duration, args.big_texts, args.big_chars)


if __name__ == "__main__":
    main()

"""Dynamic batching for the server: concurrent requests share one forward pass.

Each request submits a list of items (texts or examples). The batcher waits at most `max_wait_ms`
after the first queued request for others, up to `max_batch` items, runs the batch in its own worker
thread (so the event loop keeps answering) and hands each request its slice of the results through an
asyncio future. The queue is bounded in items: a request that would overflow it is refused at once
(`QueueFull`, answered 503 with Retry-After) instead of letting latency grow without limit.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


class QueueFull(Exception):
    """The batcher holds `max_queue` items already; the client should retry later."""


@dataclass
class _Job:
    items: list
    future: asyncio.Future


class Histogram:
    """Cumulative bucket counts, sum and count: constant memory however long the server runs."""

    def __init__(self, name: str, help: str, buckets: tuple):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts, self.sum, self.count = [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            self.counts[i] += value <= b
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        lines += [f'{self.name}_bucket{{le="{b}"}} {n}' for b, n in zip(self.buckets, self.counts)]
        return lines + [f'{self.name}_bucket{{le="+Inf"}} {self.count}', f"{self.name}_sum {self.sum:g}",
                        f"{self.name}_count {self.count}"]


class Metrics:
    """Prometheus counters, histograms and the queue gauge, written by hand (text format 0.0.4)."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint, status) -> count
        self.batch_size = Histogram("bertkit_batch_size", "items per batched model call",
                                    (1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.latency = Histogram("bertkit_request_seconds", "request latency in seconds",
                                 (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.queue_depth: Callable[[], int] = lambda: 0
        self.dropped_items = 0  # queued items never computed because their client disconnected
        self.lock = threading.Lock()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            self.latency.observe(seconds)

    def batch(self, size: int) -> None:
        with self.lock:
            self.batch_size.observe(size)

    def dropped(self, items: int) -> None:
        with self.lock:
            self.dropped_items += items

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP bertkit_requests_total HTTP requests by endpoint and status",
                     "# TYPE bertkit_requests_total counter"]
            lines += [f'bertkit_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            lines += self.batch_size.render() + self.latency.render()
            lines += ["# HELP bertkit_queue_depth items waiting to be batched", "# TYPE bertkit_queue_depth gauge",
                      f"bertkit_queue_depth {self.queue_depth()}",
                      "# HELP bertkit_dropped_items_total queued items skipped because their client disconnected",
                      "# TYPE bertkit_dropped_items_total counter", f"bertkit_dropped_items_total {self.dropped_items}"]
        return "\n".join(lines) + "\n"


class Batcher:
    """`await batcher.submit(items)` -> `run(items)`'s results for those items, batched with others."""

    def __init__(self, run: Callable[[list], list], max_batch: int, max_wait_ms: float, max_queue: int,
                 metrics: Metrics, name: str = "model"):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.max_queue, self.metrics, self.name = max_queue, metrics, name
        self.pending = 0  # items submitted and not yet taken into a batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._carry: _Job | None = None  # a job that did not fit the previous batch

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bertkit-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued job, then end the worker thread."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._executor.shutdown(wait=True)
        self._task = None

    async def submit(self, items: list) -> list:
        if self._task is None:
            raise RuntimeError("the batcher is not running (start() it in the app's lifespan)")
        if self.pending + len(items) > self.max_queue:
            raise QueueFull(f"{self.pending} items are queued for {self.name} (limit {self.max_queue})")
        self.pending += len(items)
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(items, future))
        return await future

    async def _next(self, timeout: float | None) -> _Job | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            job = await self._next(None)
            if job is None:
                break
            jobs, size, deadline = [job], len(job.items), loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    nxt = await self._next(max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                if nxt is None:
                    stopping = True
                    break
                if size + len(nxt.items) > self.max_batch:
                    self._carry = nxt
                    break
                jobs.append(nxt)
                size += len(nxt.items)
            await self._run(jobs, size, loop)
        if self._carry is not None:  # stop() arrived behind a job that did not fit: finish it too
            job, self._carry = self._carry, None
            await self._run([job], len(job.items), loop)

    async def _run(self, jobs: list[_Job], size: int, loop) -> None:
        self.pending -= size
        live = [job for job in jobs if not job.future.cancelled()]  # their clients went away: skip the work
        if len(live) < len(jobs):
            self.metrics.dropped(size - sum(len(job.items) for job in live))
        jobs = live
        if not jobs:
            return
        size = sum(len(job.items) for job in jobs)
        self.metrics.batch(size)
        items = [item for job in jobs for item in job.items]
        try:
            results: list[Any] = await loop.run_in_executor(self._executor, self.run, items)
        except Exception as e:  # noqa: BLE001 - any model failure goes back to its requests, never kills the loop
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        start = 0
        for job in jobs:
            if not job.future.done():  # the client may have gone away
                job.future.set_result(results[start: start + len(job.items)])
            start += len(job.items)

"""Dynamic batching for the server: concurrent requests share one forward pass, and big requests
take turns with small ones.

Each request submits a list of items (texts or examples) as a job. When the model is idle, the batcher
waits at most `max_wait_ms` after the first job for others, then cuts a batch from every waiting job
round-robin (see `FairQueue`): at most `max_batch` items, and at most `max_tokens` of estimated work
when the model prices its items (`run.cost(item)`). A request of 256 long texts is so split into many
batches, and a 1-text request that arrives meanwhile rides in the next one, instead of waiting for all
of the big request. Batches run in the batcher's own worker thread (so the event loop keeps answering);
each request gets its results through an asyncio future once all its items are done. The queue is
bounded in items: a request that would overflow it is refused at once (`QueueFull`, answered 503 with
Retry-After) instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The batcher holds `max_queue` items already; the client should retry later."""


@dataclass(eq=False)  # hashed by identity: a job is a key while a batch is cut
class Job:
    """One request's items and their costs; `taken` of them are in batches so far, `done` have results."""

    items: list
    costs: list[int]
    future: asyncio.Future | None = None
    taken: int = 0
    done: int = 0
    results: list = field(default_factory=list)

    def __post_init__(self):
        self.results = [None] * len(self.items)


class FairQueue:
    """Waiting jobs, cut into batches round-robin: a batch takes one item from each job with items left,
    oldest job first, and goes round again until it holds `max_batch` items or no further item fits in
    `max_cost` (the first item always fits). A big job so gets one share of each batch, and every job
    that is waiting when a batch is cut has an item in it (up to `max_batch` jobs)."""

    def __init__(self, max_batch: int, max_cost: int | None = None):
        self.max_batch, self.max_cost = max_batch, max_cost
        self.jobs: list[Job] = []
        self.waiting = 0  # items not yet taken into a batch

    def add(self, job: Job) -> None:
        self.jobs.append(job)
        self.waiting += len(job.items) - job.taken

    def remove(self, job: Job) -> int:
        """Forget the job's items not yet taken; returns how many."""
        if job not in self.jobs:
            return 0
        self.jobs.remove(job)
        left = len(job.items) - job.taken
        self.waiting -= left
        return left

    def take(self) -> list[tuple[Job, int, int]]:
        """The next batch as (job, start, end) slices of the jobs' items, in the jobs' order."""
        counts: dict[Job, int] = {}
        size = cost = 0
        while size < self.max_batch:
            added = False
            for job in self.jobs:
                i = job.taken + counts.get(job, 0)
                if i == len(job.items):
                    continue
                if size and self.max_cost is not None and cost + job.costs[i] > self.max_cost:
                    continue
                counts[job] = counts.get(job, 0) + 1
                size, cost, added = size + 1, cost + job.costs[i], True
                if size == self.max_batch:
                    break
            if not added:
                break
        batch = []
        for job, n in counts.items():
            batch.append((job, job.taken, job.taken + n))
            job.taken += n
        self.jobs = [job for job in self.jobs if job.taken < len(job.items)]
        self.waiting -= size
        return batch


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
        return lines + [
            f'{self.name}_bucket{{le="+Inf"}} {self.count}',
            f"{self.name}_sum {self.sum:g}",
            f"{self.name}_count {self.count}",
        ]


class Metrics:
    """Prometheus counters, histograms and the queue gauge, written by hand (text format 0.0.4)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint, status) -> count
        self.batch_size = Histogram(
            "bertkit_batch_size", "items per batched model call", (1, 2, 4, 8, 16, 32, 64, 128, 256)
        )
        self.latency = Histogram(
            "bertkit_request_seconds",
            "request latency in seconds",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
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
            lines = [
                "# HELP bertkit_requests_total HTTP requests by endpoint and status",
                "# TYPE bertkit_requests_total counter",
            ]
            lines += [
                f'bertkit_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                for (e, s), n in sorted(self.requests.items())
            ]
            lines += self.batch_size.render() + self.latency.render()
            lines += [
                "# HELP bertkit_queue_depth items waiting to be batched",
                "# TYPE bertkit_queue_depth gauge",
                f"bertkit_queue_depth {self.queue_depth()}",
                "# HELP bertkit_dropped_items_total queued items skipped because their client disconnected",
                "# TYPE bertkit_dropped_items_total counter",
                f"bertkit_dropped_items_total {self.dropped_items}",
            ]
        return "\n".join(lines) + "\n"


class Batcher:
    """`await batcher.submit(items)` -> `run(items)`'s results for those items, batched with others.
    `run` may price an item with `run.cost(item)` (estimated tokens); then a batch holds at most
    `max_tokens` of them."""

    def __init__(
        self,
        run: Callable[[list], list],
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics,
        name: str = "model",
        max_tokens: int | None = None,
    ):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.max_queue, self.metrics, self.name = max_queue, metrics, name
        self.cost = getattr(run, "cost", None)
        self.queue = FairQueue(max_batch, max_tokens if self.cost is not None else None)
        self._wake = asyncio.Event()  # set when a job arrives or stop() is called (made anew by start())
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        """Items submitted and not yet taken into a batch."""
        return self.queue.waiting

    def start(self) -> None:
        self._wake, self._stopping = asyncio.Event(), False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bertkit-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued job, then end the worker thread."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._executor, self._task = None, None

    async def submit(self, items: list) -> list:
        if self._task is None or self._stopping:
            raise RuntimeError("the batcher is not running (start() it in the app's lifespan)")
        if self.pending + len(items) > self.max_queue:
            raise QueueFull(f"{self.pending} items are queued for {self.name} (limit {self.max_queue})")
        costs = [self.cost(item) for item in items] if self.cost is not None else [1] * len(items)
        future = asyncio.get_running_loop().create_future()
        self.queue.add(Job(items, costs, future))
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue.waiting:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                # the model was idle: the first job waits up to max_wait for others to share its batch
                deadline = loop.time() + self.max_wait
                while self.queue.waiting < self.max_batch and not self._stopping:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
            for job in [job for job in self.queue.jobs if job.future is not None and job.future.cancelled()]:
                self.metrics.dropped(self.queue.remove(job))  # their clients went away: skip the work
            batch = self.queue.take()
            if batch:
                await self._run(batch, loop)

    async def _run(self, batch: list[tuple[Job, int, int]], loop) -> None:
        items = [item for job, start, end in batch for item in job.items[start:end]]
        self.metrics.batch(len(items))
        try:
            results: list[Any] = await loop.run_in_executor(self._executor, self.run, items)
        except Exception as e:  # noqa: BLE001 - any model failure goes back to its requests, never kills the loop
            for job, _, _ in batch:
                self.queue.remove(job)  # the rest of a failed request need not run
                if job.future is not None and not job.future.done():
                    job.future.set_exception(e)
            return
        offset = 0
        for job, start, end in batch:
            job.results[start:end] = results[offset : offset + end - start]
            offset += end - start
            job.done += end - start
            future = job.future
            if job.done == len(job.items) and future is not None and not future.done():  # the client may be gone
                future.set_result(job.results)

"""The server's batcher: the order in which jobs are cut into batches (FairQueue, pure), and the Batcher
running them in its worker thread with a gated stand-in model, so every batch boundary is known."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bertkit.encode.batcher import Batcher, FairQueue, Job, Metrics


def job(name: str, n: int, cost: int = 1) -> Job:
    return Job([f"{name}{i}" for i in range(n)], [cost] * n)


def drain(queue: FairQueue) -> list[list[str]]:
    """Every batch until the queue is empty, as lists of items."""
    batches = []
    while queue.waiting:
        batches.append([item for j, start, end in queue.take() for item in j.items[start:end]])
    return batches


def test_a_small_job_behind_a_big_one_is_in_the_next_batch():
    queue = FairQueue(max_batch=4)
    big = job("b", 100)
    queue.add(big)
    assert [item for j, s, e in queue.take() for item in j.items[s:e]] == ["b0", "b1", "b2", "b3"]
    queue.add(job("s", 1))  # arrives while the big job's first batch runs
    batches = drain(queue)
    assert batches[0] == ["b4", "b5", "b6", "s0"]  # FIFO by job would serve s0 after all 25 of big's batches
    assert [item for batch in [["b0", "b1", "b2", "b3"], *batches] for item in batch if item[0] == "b"] == big.items
    assert len(batches) == 25 and queue.waiting == 0  # 101 items in 26 batches and queue.jobs == []


def test_every_waiting_job_gets_a_share_of_each_batch():
    queue = FairQueue(max_batch=6)
    for name, n in (("a", 10), ("b", 1), ("c", 3)):
        queue.add(job(name, n))
    assert drain(queue) == [
        ["a0", "a1", "a2", "b0", "c0", "c1"],  # round-robin: a b c, a c, a
        ["a3", "a4", "a5", "a6", "a7", "c2"],
        ["a8", "a9"],
    ]


def test_the_token_budget_cuts_batches_of_long_texts():
    queue = FairQueue(max_batch=64, max_cost=1000)
    queue.add(job("long", 5, cost=512))
    queue.add(job("short", 2, cost=10))
    # long0 + short0 = 522; long1 would pass 1000, short1 still fits; then nothing more does
    assert drain(queue) == [["long0", "short0", "short1"], ["long1"], ["long2"], ["long3"], ["long4"]]
    queue = FairQueue(max_batch=64, max_cost=100)
    queue.add(job("huge", 2, cost=5000))  # one item over the budget still runs, alone
    assert drain(queue) == [["huge0"], ["huge1"]]


def test_removing_a_job_forgets_the_items_not_yet_taken():
    queue = FairQueue(max_batch=3)
    big, small = job("b", 10), job("s", 2)
    queue.add(big)
    queue.add(small)
    queue.take()  # b0 s0 b1
    assert queue.remove(big) == 8 and queue.waiting == 1
    assert queue.remove(big) == 0
    assert drain(queue) == [["s1"]]


class GatedModel:
    """A stand-in model: records each batch, returns the items upper-cased, and holds batch number
    `hold` until `release` is set (so the test can queue jobs while that batch runs)."""

    def __init__(self, hold: int = 0, fail_on: str | None = None):
        self.batches: list[list[str]] = []
        self.hold, self.fail_on = hold, fail_on
        self.running, self.release = threading.Event(), threading.Event()

    def __call__(self, items):
        self.batches.append(list(items))
        if len(self.batches) - 1 == self.hold:
            self.running.set()
            assert self.release.wait(10), "the test did not release the held batch"
        if self.fail_on in items:
            raise RuntimeError(f"cannot encode {self.fail_on}")
        return [item.upper() for item in items]


async def until(condition, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_batcher_serves_a_small_request_while_a_big_one_runs():
    model = GatedModel(hold=0)

    async def scenario():
        batcher = Batcher(model, max_batch=4, max_wait_ms=0, max_queue=1000, metrics=Metrics())
        batcher.start()
        big = asyncio.ensure_future(batcher.submit([f"b{i}" for i in range(40)]))
        await until(model.running.is_set)  # b0..b3 are in the model
        small = asyncio.ensure_future(batcher.submit(["s0"]))
        await until(lambda: batcher.pending == 37)
        model.release.set()
        assert await small == ["S0"]
        assert not big.done()  # the small request was answered while the big one still runs
        assert await big == [f"B{i}" for i in range(40)]
        await batcher.stop()

    asyncio.run(scenario())
    assert model.batches[:2] == [["b0", "b1", "b2", "b3"], ["b4", "b5", "b6", "s0"]]
    assert [len(b) for b in model.batches] == [4] * 10 + [1]  # 41 items


def test_a_cancelled_big_request_stops_costing_batches():
    model = GatedModel(hold=0)
    metrics = Metrics()

    async def scenario():
        batcher = Batcher(model, max_batch=4, max_wait_ms=0, max_queue=1000, metrics=metrics)
        batcher.start()
        big = asyncio.ensure_future(batcher.submit([f"b{i}" for i in range(40)]))
        await until(model.running.is_set)
        big.cancel()  # the client went away after its first batch started
        await asyncio.sleep(0)
        model.release.set()
        assert await batcher.submit(["after"]) == ["AFTER"]
        await batcher.stop()

    asyncio.run(scenario())
    assert model.batches == [["b0", "b1", "b2", "b3"], ["after"]]
    assert metrics.dropped_items == 36


def test_a_model_failure_fails_the_requests_in_that_batch_and_no_others():
    model = GatedModel(hold=0, fail_on="b5")

    async def scenario():
        batcher = Batcher(model, max_batch=4, max_wait_ms=0, max_queue=1000, metrics=Metrics())
        batcher.start()
        big = asyncio.ensure_future(batcher.submit([f"b{i}" for i in range(12)]))
        await until(model.running.is_set)
        small = asyncio.ensure_future(batcher.submit(["s0"]))
        await until(lambda: batcher.pending == 9)
        model.release.set()
        with pytest.raises(RuntimeError, match="cannot encode b5"):
            await big
        with pytest.raises(RuntimeError, match="cannot encode b5"):  # it shared the failing batch
            await small
        assert batcher.pending == 0  # the rest of the big request was not run
        assert await batcher.submit(["later"]) == ["LATER"]
        await batcher.stop()

    asyncio.run(scenario())
    assert model.batches == [["b0", "b1", "b2", "b3"], ["b4", "b5", "b6", "s0"], ["later"]]


def test_stop_finishes_every_queued_job():
    model = GatedModel(hold=0)

    async def scenario():
        batcher = Batcher(model, max_batch=2, max_wait_ms=0, max_queue=1000, metrics=Metrics())
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit([f"j{i}a", f"j{i}b", f"j{i}c"])) for i in range(3)]
        await until(model.running.is_set)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        model.release.set()
        await stopping
        return [j.result() for j in jobs]

    assert asyncio.run(scenario()) == [[f"J{i}A", f"J{i}B", f"J{i}C"] for i in range(3)]


def test_token_estimate_counts_words_cjk_characters_and_punctuation():
    from bertkit.encode.server import estimate_tokens

    assert estimate_tokens("I love New York, in 2024!", 512) == 2 + 8  # I love New York , in 2024 !
    assert estimate_tokens("今天天气很好。", 512) == 2 + 7  # BERT splits every CJK character off
    assert estimate_tokens("word " * 10_000, 256) == 256  # cut at max_length, reading only the start

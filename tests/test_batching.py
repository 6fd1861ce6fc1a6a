"""The serving queue on its own, with a fake model: order, per-item retry, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from zhembed.serve.batching import BatchQueue, Expired


def each_group(embed):
    """A queue's model (one group of texts and whether it runs beside others, in; its vectors out) from a model
    of one group."""
    return lambda group, beside: embed(group)


def fake_model(log: list, delay_per_text: float = 0.0, bad: int | None = None):
    """A model whose vector is [first token id]; it fails any batch holding the token `bad`."""
    def embed(batch: list[list[int]]) -> np.ndarray:
        log.append([ids[0] for ids in batch])
        time.sleep(delay_per_text * len(batch))
        if bad is not None and any(bad in ids for ids in batch):
            raise ValueError("bad input")
        return np.array([[float(ids[0])] for ids in batch])
    return each_group(embed)


def test_a_short_request_does_not_wait_behind_a_long_one():
    async def scenario():
        log: list = []
        queue = BatchQueue(fake_model(log, 0.002), max_batch_tokens=8 * 4)
        long = asyncio.ensure_future(queue.submit([[1000 + i] * 4 for i in range(48)]))
        await asyncio.sleep(0.005)  # the long request's first batch is running
        short = await queue.submit([[7] * 4], urgent=True)
        done_when_short_finished = long.done()
        await long
        queue.close()
        return log, short, done_when_short_finished

    log, short, long_was_done = asyncio.run(scenario())
    assert short.tolist() == [[7.0]] and not long_was_done
    assert any(7 in batch for batch in log[:2]), log  # in the next batch, not after all 48 texts


def test_a_failing_batch_fails_only_the_bad_input():
    async def scenario():
        log: list = []
        queue = BatchQueue(fake_model(log, bad=666), max_wait_ms=50)
        good, bad = await asyncio.gather(queue.submit([[1], [2]]), queue.submit([[666]]), return_exceptions=True)
        queue.close()
        return log, good, bad

    log, good, bad = asyncio.run(scenario())
    assert good.tolist() == [[1.0], [2.0]] and isinstance(bad, ValueError)
    assert len(log[0]) == 3  # one batch with all three, then each alone


def test_a_request_past_its_deadline_expires_and_a_cancelled_one_never_runs():
    release, log = threading.Event(), []

    def slow(batch):
        release.wait(5)
        log.append(batch[0][0])
        return np.zeros((len(batch), 1))

    async def scenario():
        queue = BatchQueue(each_group(slow))
        first = asyncio.ensure_future(queue.submit([[1]]))
        await asyncio.sleep(0.05)  # the model is busy with the first request
        expiring = asyncio.ensure_future(queue.submit([[2]], timeout=0.05))
        cancelled = asyncio.ensure_future(queue.submit([[3]]))
        await asyncio.sleep(0.1)  # the second one's deadline passes; the third one's client goes away
        cancelled.cancel()
        await asyncio.sleep(0.01)
        release.set()
        await first
        with pytest.raises(Expired):
            await expiring
        await queue.submit([[4]])
        queue.close()

    asyncio.run(scenario())
    assert log == [1, 4]  # neither the expired nor the cancelled request reached the model


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_is_visible():
    def dies(batch):
        raise SystemExit("the worker thread ends")

    async def scenario():
        queue = BatchQueue(each_group(dies))
        task = asyncio.ensure_future(queue.submit([[1]], timeout=0.5))
        await asyncio.sleep(0.2)
        alive = queue.alive
        task.cancel()
        return alive

    assert asyncio.run(scenario()) is False


def test_an_urgent_request_goes_between_the_groups_of_a_taken_batch():
    async def scenario():
        log: list = []
        queue = BatchQueue(fake_model(log, 0.001), max_batch_tokens=100_000)
        bulk = asyncio.ensure_future(queue.submit([[1000 + i] * 4 for i in range(96)]))  # one take, 3 passes of 32
        await asyncio.sleep(0.01)  # the first pass is running
        urgent = await queue.submit([[7] * 4], urgent=True)
        await bulk
        queue.close()
        return log, urgent

    log, urgent = asyncio.run(scenario())
    assert urgent.tolist() == [[7.0]]
    assert [len(batch) for batch in log] == [32, 1, 32, 32] and log[1] == [7], [len(b) for b in log]


def test_while_urgent_requests_arrive_other_texts_run_in_small_passes_and_urgent_ones_in_full_ones():
    """An urgent request waits for a free lane at most one pass of other texts, so those passes are cut short
    while urgent requests keep arriving (256 padded tokens took 35 ms on one AVX2 core); a batch of urgent
    jobs itself runs in full groups (it was cut too)."""
    from zhembed.serve.batching import URGENT_GROUP_TOKENS

    async def scenario():
        log: list = []
        queue = BatchQueue(fake_model(log, 0.002), max_batch_tokens=100_000)
        await queue.submit([[1] * 8], urgent=True)
        await queue.submit([[100 + i] * 8 for i in range(32)])  # 256 padded tokens, taken while urgent ones arrive
        blocker = asyncio.ensure_future(queue.submit([[2] * 8]))
        await asyncio.sleep(0.001)  # the blocker is running: the next sixteen wait, then go in one batch
        urgent = [queue.submit([[300 + i] * 40], urgent=True) for i in range(16)]
        await asyncio.gather(blocker, *urgent)
        queue.close()
        return log

    log = asyncio.run(scenario())
    bulk = [batch for batch in log if batch[0] >= 100 and batch[0] < 300]
    assert sum(map(len, bulk)) == 32 and max(map(len, bulk)) <= URGENT_GROUP_TOKENS // 8, log
    assert [len(batch) for batch in log if batch[0] >= 300] == [16], log


def test_texts_of_very_different_lengths_run_in_separate_passes():
    async def scenario():
        log: list = []
        queue = BatchQueue(fake_model(log))
        await queue.submit([[1] * 60, [2] * 5, [3] * 6, [4] * 58])
        queue.close()
        return log

    assert sorted(map(sorted, asyncio.run(scenario()))) == [[1, 4], [2, 3]]


def test_with_two_lanes_a_free_lane_starts_the_next_group_without_waiting_for_the_other():
    """One slow group on one lane does not hold the other lane: it runs the short groups meanwhile."""
    running, most, lock, log = [0], [0], threading.Lock(), []

    def model(group, beside):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2 if group[0][0] >= 5000 else 0.002)
        log.append((len(group), beside, time.monotonic()))
        with lock:
            running[0] -= 1
        return np.array([[float(ids[0])] for ids in group])

    async def scenario():
        queue = BatchQueue(model, max_batch_tokens=100_000, lanes=2, max_wait_ms=50)  # one take of all six
        slow = queue.submit([[5000 + i] * 100 for i in range(4)])  # one group of long texts: 0.2 s
        quick = [queue.submit([[1000 + 32 * r + i] * 4 for i in range(32)]) for r in range(5)]  # 5 groups
        results = await asyncio.gather(slow, *quick)
        queue.close()
        return results

    started = time.monotonic()
    slow, *quick = asyncio.run(scenario())
    assert slow[:, 0].tolist() == [5000.0 + i for i in range(4)]
    assert [q[:, 0].tolist() for q in quick] == [[1000.0 + 32 * r + i for i in range(32)] for r in range(5)]
    assert most[0] == 2 and all(beside for _, beside, _ in log)
    quick_done = [t for n, _, t in log if n == 32]
    assert len(quick_done) == 5 and max(quick_done) < log[-1][2]  # all five ran while the slow group ran
    assert log[-1][0] == 4 and log[-1][2] - started < 1


def test_with_two_lanes_a_take_that_finds_nothing_leaves_the_worker_alive():
    """When a lane frees with no group left, the worker takes what is waiting without blocking, which may be
    nothing; grouping that empty batch raised IndexError and killed the worker, so the request hung."""
    async def scenario():
        queue = BatchQueue(fake_model([], 0.01), lanes=2)
        vectors = await asyncio.wait_for(queue.submit([[1000 + i] * 4 for i in range(64)]), 10)  # two groups
        alive = queue.alive
        queue.close()
        return vectors, alive

    vectors, alive = asyncio.run(scenario())
    assert vectors[:, 0].tolist() == [1000.0 + i for i in range(64)] and alive


def test_with_two_lanes_a_lone_group_runs_on_every_core_and_a_failure_fails_only_its_input():
    calls: list = []

    def model(group, beside):
        calls.append((len(group), beside))
        if any(666 in ids for ids in group):
            raise ValueError("bad input")
        return np.array([[float(ids[0])] for ids in group])

    async def scenario():
        queue = BatchQueue(model, lanes=2)
        lone = await queue.submit([[7] * 4])
        bad = queue.submit([[1000 + i] * 4 for i in range(31)] + [[666] * 4])
        with pytest.raises(ValueError):
            await bad
        queue.close()
        return lone

    assert asyncio.run(scenario()).tolist() == [[7.0]]
    assert calls[0] == (1, False)  # nothing else waited: every core
    assert calls[1] == (32, False) and calls[2:] == [(1, False)] * 32  # then text by text

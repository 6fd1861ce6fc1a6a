"""The micro-batching queue between HTTP handlers and the model.

Handlers submit the tokenized texts of one request (a job) and await its vectors; one worker thread owns
the model (which may run the groups it is handed side by side, one core each: see below). Whenever the model
(or one of its lanes) is free, the worker forms a batch from the pending jobs and runs it:
- no fixed wait: an idle model starts at once, and batches grow while it is busy (`max_wait_ms` > 0 makes
  it wait that long for a batch to fill, counted from the oldest job's arrival);
- urgent jobs first (the server marks small requests urgent), so a one-sentence request waits at most for
  the forward pass already running, never for the rest of a 64-text one; otherwise first come, first
  served; a job waiting longer than `max_delay_ms` goes first whatever it is;
- a batch is taken within a padded-token budget, then run as forward passes over similar-length groups
  (runtime's `length_batches`), so short texts are not padded to a long one; between two groups, waiting
  urgent jobs go first;
- on a backend with lanes (runtime.backends.Backend.lane), groups run side by side, one core each, and the
  worker starts the next group on whichever lane frees first, so no core waits for the other's group (a lone
  group with nothing else waiting runs on every core); the worker still decides what runs, and the cores do
  not exchange every op's output;
- a failing batch is retried text by text, so only the bad input fails;
- jobs whose client went away or whose deadline passed are dropped before they reach the model.
The event loop never runs the model, and a full queue is refused at once rather than queued.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..runtime.encoder import length_batches

GROUP_TEXTS = 32  # texts per forward pass: as fast per text as larger passes on a CPU
# padded tokens per pass of other texts while urgent requests keep arriving, so that an urgent one waits little for
# a free lane: 256 tokens took 35 ms on one AVX2 core, 64 about 10 ms
URGENT_GROUP_TOKENS = 64
URGENT_RECENT_S = 1.0  # "keep arriving": one came within this many seconds


class QueueFull(Exception):
    """More texts are waiting than the queue admits."""


class Expired(Exception):
    """The request's deadline passed before the model reached it."""


@dataclass
class _Job:
    """The texts of one request: token ids, where each result goes, and the order to take them in."""

    ids: list[list[int]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float
    urgent: bool = False
    arrived: float = field(default_factory=time.monotonic)
    results: list = field(default_factory=list)
    todo: list[int] = field(default_factory=list)  # positions not yet batched, shortest last (popped first)

    def __post_init__(self):
        self.results = [None] * len(self.ids)
        self.todo = sorted(range(len(self.ids)), key=lambda i: -len(self.ids[i]))


class BatchQueue:
    def __init__(self, embed: Callable[[list[list[int]], bool], np.ndarray], max_batch_tokens: int = 8192,
                 max_wait_ms: float = 0.0, max_queue: int = 4096, on_batch: Callable[[int, int], None] | None = None,
                 max_delay_ms: float = 500.0, lanes: int = 1):
        """`embed(group, beside)` gives one group's vectors: on every core, or with `beside` on one core
        beside other groups (Encoder.embed_group); up to `lanes` groups run at once (Encoder.lanes)."""
        self.embed, self.max_batch_tokens, self.max_wait = embed, max_batch_tokens, max_wait_ms / 1000
        self.lanes = lanes
        self._lanes = ThreadPoolExecutor(lanes, thread_name_prefix="zhembed-lane") if lanes > 1 else None
        self.max_queue, self.on_batch, self.max_delay = max_queue, on_batch, max_delay_ms / 1000
        self._jobs: list[_Job] = []
        self._depth = 0
        self._last_urgent = -float("inf")
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="zhembed-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Texts waiting for the model."""
        return self._depth

    @property
    def alive(self) -> bool:
        """Whether the worker thread that runs the model is running."""
        return self._thread.is_alive()

    def has_room(self, texts: int) -> bool:
        return self._depth + texts <= self.max_queue

    def submit(self, ids: list[list[int]], timeout: float = 60.0, urgent: bool = False) -> asyncio.Future:
        """A future of the vectors for one request's tokenized texts, in order (a plain future, not a
        coroutine: no task per request). QueueFull at once if there is no room for them; the future fails
        with Expired if the model has not reached them within `timeout` seconds; cancelling it drops the
        texts that have not reached the model. Urgent jobs are batched before any other."""
        loop = asyncio.get_running_loop()
        job = _Job(ids, loop.create_future(), loop, time.monotonic() + timeout, urgent)
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if not self.has_room(len(ids)):
                raise QueueFull(f"{self._depth} texts are queued; the limit is {self.max_queue}")
            self._jobs.append(job)
            self._depth += len(ids)
            if urgent:
                self._last_urgent = job.arrived
            self._cond.notify()
        return job.future

    def _take(self, block: bool, urgent_only: bool = False) -> list[tuple[_Job, int]] | None:
        """A batch within the token budget. Blocking: wait until there is work (None when stopping). Not
        blocking: what is there at once (possibly none), only urgent jobs if asked."""
        with self._cond:
            if not block:
                self._drop_finished()
                return self._fill(urgent_only)
            while True:
                self._drop_finished()
                if self._jobs:
                    break
                if self._stopping:
                    return None
                self._cond.wait()
            if self.max_wait:
                deadline = min(job.arrived for job in self._jobs) + self.max_wait
                while self._jobs and self._depth * self._longest() < self.max_batch_tokens \
                        and time.monotonic() < deadline and not self._stopping:  # every caller may leave meanwhile
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                    self._drop_finished()
                if not self._jobs:
                    return []
            return self._fill()

    def _urgent_waiting(self) -> bool:
        with self._cond:
            return any(job.urgent for job in self._jobs)

    def _drop_finished(self) -> None:
        """Forget jobs whose caller went away, and fail those past their deadline."""
        now = time.monotonic()
        for job in [j for j in self._jobs if j.future.cancelled() or j.deadline < now]:
            self._jobs.remove(job)
            self._depth -= len(job.todo)
            if not job.future.cancelled():
                job.loop.call_soon_threadsafe(_settle, job.future, None, Expired("the request waited past its deadline"))

    def _longest(self) -> int:
        return max(len(job.ids[i]) for job in self._jobs for i in job.todo)

    def _fill(self, urgent_only: bool = False) -> list[tuple[_Job, int]]:
        """Overdue jobs first, then urgent ones, each in order of arrival; each job's texts shortest first. A
        batch that starts with an urgent job holds only urgent jobs."""
        now = time.monotonic()
        order = sorted(self._jobs, key=lambda j: (now - j.arrived < self.max_delay, not j.urgent, j.arrived))
        if urgent_only or (order and order[0].urgent):
            order = [j for j in order if j.urgent]
        batch: list[tuple[_Job, int]] = []
        longest = 0
        for job in order:
            while job.todo:
                width = max(longest, len(job.ids[job.todo[-1]]))
                if batch and (len(batch) + 1) * width > self.max_batch_tokens:
                    break
                batch.append((job, job.todo.pop()))
                longest = width
            if job.todo:
                break
        self._depth -= len(batch)
        self._jobs = [j for j in self._jobs if j.todo]
        return batch

    def _run(self) -> None:
        """Keep every lane busy: whenever one is free, start the next group on it (taking a batch when no
        group is left, or when urgent jobs wait and the next group is not urgent); a lone group with nothing
        else waiting runs on every core."""
        groups: deque[list[tuple[_Job, int]]] = deque()
        running: dict[Future, list[tuple[_Job, int]]] = {}
        while True:
            for future in [f for f in running if f.done()]:
                self._deliver(running.pop(future), *future.result())
            free = self.lanes - len(running)
            if free and (not groups or (not groups[0][0][0].urgent and self._urgent_waiting())):
                batch = self._take(block=not groups and not running, urgent_only=bool(groups))
                if batch is None:
                    return
                groups.extendleft(reversed(self._groups(batch)))
            if free and groups:
                self._start(groups.popleft(), running, alone=not running and not groups and not self._jobs)
            elif running:
                self._wait(running, free)

    def _start(self, group: list[tuple[_Job, int]], running: dict, alone: bool) -> None:
        """Run a group: alone on every core, in this thread; else on a free lane, beside the others."""
        if alone or self._lanes is None:
            self._deliver(group, *self._embed_group(group, beside=False))
            return
        future = self._lanes.submit(self._embed_group, group, True)
        future.add_done_callback(self._wake)
        running[future] = group

    def _wake(self, _: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def _wait(self, running: dict, free: int) -> None:
        """Until a running group finishes, or (with a lane free) a job arrives."""
        with self._cond:
            while not any(f.done() for f in running) and not (free and self._jobs):
                self._cond.wait()

    def _deliver(self, group: list[tuple[_Job, int]], vectors: list, errors: list) -> None:
        """Hand each finished job its vectors, last thing before this thread goes back to waiting: the event loop
        that each hand-off wakes needs the GIL, which this thread holds until then."""
        if self.on_batch:
            self.on_batch(len(group), sum(len(job.ids[i]) for job, i in group))
        for (job, i), vector, error in zip(group, vectors, errors):
            job.results[i] = error if error is not None else vector
            if all(r is not None for r in job.results):
                failures = [r for r in job.results if isinstance(r, Exception)]
                value = None if failures else np.stack(job.results)
                job.loop.call_soon_threadsafe(_settle, job.future, value, failures[0] if failures else None)

    def _groups(self, batch: list[tuple[_Job, int]]) -> list[list[tuple[_Job, int]]]:
        """Similar-length groups of the batch; while urgent requests keep arriving, a batch of other requests runs
        in small groups, so that the next urgent one soon finds a lane free (a batch of urgent jobs holds only
        urgent ones, and runs in full groups)."""
        if len(batch) < 2:  # nothing (a take while lanes run), or a lone text (a one-client load)
            return [batch] if batch else []
        cut = not batch[0][0].urgent and time.monotonic() - self._last_urgent < URGENT_RECENT_S
        rows = length_batches([job.ids[i] for job, i in batch], GROUP_TEXTS, URGENT_GROUP_TOKENS if cut else None)
        return [[batch[r] for r in reversed(row)] for row in rows]  # each group shortest first, as taken

    def _embed_group(self, group: list[tuple[_Job, int]], beside: bool) -> tuple[list, list]:
        """The group's vectors and errors (None where none): after a failure, each text alone, so that only
        the bad input fails."""
        try:
            return list(self.embed([job.ids[i] for job, i in group], beside)), [None] * len(group)
        except Exception as e:  # a model failure fails only its own input, never the worker
            if len(group) == 1:
                return [None], [e]
        each = [self._embed_group([item], beside) for item in group]
        return [v for vectors, _ in each for v in vectors], [e for _, errors in each for e in errors]

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._lanes is not None:
            self._lanes.shutdown(wait=False)


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)

"""The micro-batching queue between HTTP handlers and the model.

Handlers submit tokenized texts and await futures; one worker thread owns the model. Whenever the model
is free it takes the pending texts in arrival order, up to a padded-token budget, waiting at most
`max_wait_ms` for a batch to fill, runs one forward pass and routes each vector back to its request.
The event loop never runs the model, and a full queue is refused at once rather than queued.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    """More texts are waiting than the queue admits."""


@dataclass
class _Item:
    ids: list[int]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


class BatchQueue:
    def __init__(self, embed: Callable[[list[list[int]]], np.ndarray], max_batch_tokens: int = 8192,
                 max_wait_ms: float = 2.0, max_queue: int = 4096, on_batch: Callable[[int, int], None] | None = None):
        self.embed, self.max_batch_tokens, self.max_wait = embed, max_batch_tokens, max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="zhembed-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    async def submit(self, ids: list[list[int]]) -> np.ndarray:
        """Vectors for these tokenized texts, in order; QueueFull if the queue has no room for them."""
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.create_future(), loop) for x in ids]
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._pending) + len(items) > self.max_queue:
                raise QueueFull(f"{len(self._pending)} texts are queued; the limit is {self.max_queue}")
            self._pending.extend(items)
            self._cond.notify()
        return np.stack(await asyncio.gather(*(item.future for item in items)))

    def _take(self) -> list[_Item] | None:
        """Block until there is work (None when stopping), then take a batch within the token budget."""
        with self._cond:
            while not self._pending:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._pending[0].arrived + self.max_wait
            while self._fits() == len(self._pending) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return [self._pending.popleft() for _ in range(self._fits())]

    def _fits(self) -> int:
        """How many of the first pending texts fit the padded-token budget (at least one)."""
        n = longest = 0
        for item in self._pending:
            longest = max(longest, len(item.ids))
            if n and (n + 1) * longest > self.max_batch_tokens:
                break
            n += 1
        return n

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                vectors = self.embed([item.ids for item in batch])
                results = [(item, vec, None) for item, vec in zip(batch, vectors)]
            except Exception as e:  # a model failure fails these requests, never the worker
                results = [(item, None, e) for item in batch]
            if self.on_batch:
                self.on_batch(len(batch), sum(len(item.ids) for item in batch))
            for item, vec, err in results:
                item.loop.call_soon_threadsafe(_resolve, item.future, vec, err)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)


def _resolve(future: asyncio.Future, value, error) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)

"""The server's one inference path, as text-embeddings-inference's core/src/infer.rs: `Infer` is the only code
that validates request texts, tokenizes them and submits them to the batching queue. Handlers call it and
shape its results; they never touch the encoder or the queue themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from ..errors import ZhembedError
from ..runtime import Encoder
from ..runtime.chunking import combine
from .batching import BatchQueue, Expired, QueueFull
from .limits import Limits
from .schemas import SURROGATE, ApiError

INLINE_TOKENIZE_CHARS = 2000  # up to this many characters, tokenizing inline is cheaper than a hop to a thread
Disconnected = Callable[[], Awaitable[bool]]


class Infer:
    """Texts to vectors through one `BatchQueue` (one worker thread hands the model its batches), under the
    server's limits."""

    def __init__(self, encoder: Encoder, limits: Limits, queue: BatchQueue, max_length: int | None = None):
        self.encoder, self.limits, self.queue = encoder, limits, queue
        self.max_length = min(max_length or encoder.config.max_seq_length, encoder.max_positions)

    def check(self, texts: list, param: str) -> None:
        """Every limit that needs no tokenization, and well-formed text."""
        limits = self.limits
        if not texts:
            raise ApiError(400, f"'{param}' must not be empty", param)
        if len(texts) > limits.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs exceed the limit of {limits.max_inputs} (--max-inputs)", param)
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                raise ApiError(413, f"{param}[{i}] has {len(text)} characters; the limit is {limits.max_chars} "
                                    "(--max-chars)", param)
            if SURROGATE.search(text):
                raise ApiError(400, f"{param}[{i}] contains a lone UTF-16 surrogate, which is not text; "
                                    "send valid Unicode", param)
        total = sum(map(len, texts))
        if total > limits.max_total_chars:
            raise ApiError(413, f"the request's texts have {total} characters; the limit is {limits.max_total_chars} "
                                "(--max-total-chars)", param)

    def dimensions(self, dimensions: int | None) -> int:
        try:
            return self.encoder.check_dimensions(dimensions)
        except ZhembedError as e:
            raise ApiError(400, str(e), "dimensions") from None

    async def embed(self, texts: list[str], disconnected: Disconnected,
                    length: int | None = None) -> tuple[np.ndarray, list[list[int]]]:
        """Vectors of the texts cut at `length` tokens (default: the server's), and their token ids."""
        chars = sum(map(len, texts))
        if not self.queue.has_room(len(texts)):  # refused before any tokenization
            raise ApiError(503, f"server busy: {self.queue.depth} texts are queued; the limit is "
                                f"{self.limits.max_queue} (--max-queue)", headers={"Retry-After": "1"})
        length = length or self.max_length
        if chars <= INLINE_TOKENIZE_CHARS:
            ids = self.encoder.tokenize(texts, length)
        else:
            ids = await asyncio.to_thread(self.encoder.tokenize, texts, length)
        tokens = sum(map(len, ids))
        if tokens > self.limits.max_request_tokens:  # it could not finish within the deadline: refused now
            raise ApiError(413, f"the request needs {tokens} tokens (long texts count every window); the limit is "
                                f"{self.limits.max_request_tokens} (--max-request-tokens); send fewer or shorter texts")
        urgent = chars <= self.limits.fast_lane_chars
        return await self._submit(ids, urgent, disconnected), ids

    async def _submit(self, ids: list[list[int]], urgent: bool, disconnected: Disconnected) -> np.ndarray:
        try:
            return await until_disconnected(disconnected, self.queue.submit(ids, self.limits.request_timeout, urgent))
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}", headers={"Retry-After": "1"}) from None
        except Expired:
            raise ApiError(503, f"the model did not reach this request within {self.limits.request_timeout:g} s "
                                "(--request-timeout); retry later", headers={"Retry-After": "1"}) from None
        except ApiError:  # 499: the client left
            raise
        except Exception as e:
            raise ApiError(400, f"the model could not encode this input ({type(e).__name__})") from None

    async def embed_chunked(self, texts: list[str], disconnected: Disconnected) -> tuple[np.ndarray, list[list[int]]]:
        """Each text as overlapping windows through the same queue, averaged by their tokens (as
        Encoder.encode(long="chunk"))."""
        passages = await asyncio.to_thread(self.encoder.split_long, texts, self.max_length)
        vectors, ids = await self.embed(passages.pieces, disconnected)
        weights = np.array([len(x) for x in ids], dtype=np.float32)
        return combine(vectors, passages.counts, weights), ids

    async def similarity(self, source: str, targets: list[str], calibrated: bool,
                         disconnected: Disconnected) -> tuple[np.ndarray, list[list[int]]]:
        """Cosine of each target to the source, or the calibrated probability that they match."""
        self.check(targets, "targets")
        self.check([source], "source")
        try:
            calibration = self.encoder.calibration if calibrated else None
        except ZhembedError as e:
            raise ApiError(400, str(e), "calibrated") from None
        vectors, ids = await self.embed([source, *targets], disconnected)
        scores = vectors[1:] @ vectors[0]
        return (calibration(scores) if calibration is not None else scores), ids

    def usage(self, ids: list[list[int]], truncated: bool = True) -> dict:
        tokens = sum(map(len, ids))
        cut = sum(len(x) >= self.max_length for x in ids) if truncated else 0
        return {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": cut}


DISCONNECT_POLL_S = 0.25  # how often a request still waiting for the model checks that its client is there


async def until_disconnected(disconnected: Disconnected, future: asyncio.Future[np.ndarray]) -> np.ndarray:
    """Await `future`; if the client goes away first, cancel it (its texts never reach the model) and answer
    499. The future is awaited directly, and the client is watched only once the answer has taken
    DISCONNECT_POLL_S: a fast request costs no task and no extra pass of the event loop (asyncio.wait cost it
    a waiter future, a timer and that pass)."""
    loop = asyncio.get_running_loop()
    watch: list[asyncio.Task] = []
    timer = loop.call_later(DISCONNECT_POLL_S, lambda: watch.append(loop.create_task(_watch(disconnected, future))))
    try:
        return await future
    except asyncio.CancelledError:
        if watch and watch[0].done() and not watch[0].cancelled() and watch[0].result():
            raise ApiError(499, "the client closed the connection") from None
        raise
    finally:
        timer.cancel()
        for task in watch:
            task.cancel()


async def _watch(disconnected: Disconnected, future: asyncio.Future) -> bool:
    """Whether the client left before `future` was done (it is then cancelled)."""
    while not future.done():
        if await disconnected():
            future.cancel()
            return True
        await asyncio.sleep(DISCONNECT_POLL_S)
    return False

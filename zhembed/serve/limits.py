"""Every limit of the server, with its default, written once: `zhembed serve` builds its options from these
fields, and README "Serving" lists them. No third-party import, so the CLI reads it in the core install."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Every limit of the server, each with its `zhembed serve` flag (README: Serving)."""

    max_inputs: int = 2048             # --max-inputs: texts per request
    max_chars: int = 20_000            # --max-chars: characters per text
    max_batch_tokens: int = 8192       # --max-batch-tokens: padded tokens per forward pass
    max_wait_ms: float = 0.0           # --max-wait-ms: wait for a batch to fill (0: start at once when idle)
    max_queue: int = 4096              # --max-queue: texts waiting for the model; beyond: 503
    max_body_bytes: int = 2 * 2**20    # --max-body-bytes: request body; beyond: 413
    max_total_chars: int = 250_000     # --max-total-chars: characters of all texts of a request; beyond: 413
    max_concurrent: int = 512          # --max-concurrent: requests in flight; beyond: 429
    max_k: int = 100                   # --max-k: hits per /search query
    max_search_queries: int = 32       # --max-search-queries: queries per /search request
    request_timeout: float = 30.0      # --request-timeout: seconds a request may wait for the model; beyond: 503
    fast_lane_chars: int = 128         # --fast-lane-chars: requests up to this many characters are batched before bigger ones
    max_request_tokens: int = 131_072  # --max-request-tokens: tokens of a request after tokenization (windows too); beyond: 413
    max_header_bytes: int = 64 * 1024  # --max-header-bytes: request line and headers; beyond: 431, connection closed
    max_headers: int = 100             # --max-headers: header lines per request; beyond: 431
    header_timeout: float = 10.0       # --header-timeout: seconds to receive a request's head; beyond: 408, closed
    body_timeout: float = 30.0         # --body-timeout: seconds to receive its body after the head; beyond: 408

"""zhembed serve (the [serve] extra)."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError, require
from ..serve.limits import Limits
from .common import ModelOpt, app

D = Limits()  # every default is written once, in Limits


@app.command()
def serve(model: ModelOpt = None,
          backend: Annotated[str, typer.Option(help="auto (ONNX when exported), onnx or torch.")] = "auto",
          host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8080,
          api_key: Annotated[Optional[str], typer.Option(envvar="ZHEMBED_API_KEY", show_envvar=True,
                                                         help="Require 'Authorization: Bearer KEY' (all but /health).")] = None,
          allowed_hosts: Annotated[Optional[str], typer.Option(
              help="Comma-separated Host names to answer, or '*' (default: localhost names on loopback, else any).")] = None,
          max_batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = D.max_batch_tokens,
          max_wait_ms: Annotated[float, typer.Option(help="Wait for a batch to fill (0: an idle model starts at once).")] = D.max_wait_ms,
          max_queue: Annotated[int, typer.Option(help="Texts allowed to wait; beyond it: 503.")] = D.max_queue,
          max_inputs: Annotated[int, typer.Option(help="Texts per request; beyond: 413.")] = D.max_inputs,
          max_chars: Annotated[int, typer.Option(help="Characters per text; beyond: 413.")] = D.max_chars,
          max_total_chars: Annotated[int, typer.Option(help="Characters of all texts of a request; beyond: 413.")] = D.max_total_chars,
          max_request_tokens: Annotated[int, typer.Option(help="Tokens of a request (every window of a long text); beyond: 413.")] = D.max_request_tokens,
          max_body_bytes: Annotated[int, typer.Option(help="Request body size; beyond: 413.")] = D.max_body_bytes,
          max_header_bytes: Annotated[int, typer.Option(help="Request line and headers; beyond: 431, connection closed.")] = D.max_header_bytes,
          max_headers: Annotated[int, typer.Option(help="Header lines per request; beyond: 431.")] = D.max_headers,
          header_timeout: Annotated[float, typer.Option(help="Seconds to receive a request's head; beyond: 408, closed.")] = D.header_timeout,
          body_timeout: Annotated[float, typer.Option(help="Seconds to receive the body after the head; beyond: 408.")] = D.body_timeout,
          max_concurrent: Annotated[int, typer.Option(help="Requests in flight (/health aside); beyond: 429.")] = D.max_concurrent,
          max_k: Annotated[int, typer.Option(help="Hits per /search query; beyond: 400.")] = D.max_k,
          max_search_queries: Annotated[int, typer.Option(help="Queries per /search request; beyond: 413.")] = D.max_search_queries,
          request_timeout: Annotated[float, typer.Option(help="Seconds a request may wait for the model; beyond: 503.")] = D.request_timeout,
          fast_lane_chars: Annotated[int, typer.Option(help="Requests up to this many characters are batched before bigger ones.")] = D.fast_lane_chars,
          threads: Annotated[Optional[int], typer.Option(help="Model threads (default: all cores).")] = None,
          onnx_spinning: Annotated[str, typer.Option(help="ONNX threads busy-wait: always, within-runs (between the ops of a pass, never between passes) or never.")] = "within-runs",
          index: Annotated[Optional[Path], typer.Option(help="A zhembed index to serve at POST /search.")] = None) -> None:
    """Serve an OpenAI-compatible /v1/embeddings API with dynamic batching (and /search over an index)."""
    require("serve", "zhembed serve")
    if api_key is None and "ZHEMBED_API_KEY" in os.environ:  # click treats an empty variable as unset
        api_key = os.environ["ZHEMBED_API_KEY"]
    if api_key is not None and not api_key.strip():
        raise ZhembedError("the API key (--api-key or ZHEMBED_API_KEY) is empty, which would turn authentication "
                           "off; set a non-empty key, or unset ZHEMBED_API_KEY to serve without one")
    if index:
        require("search", "zhembed serve --index")
    from ..runtime import Encoder
    from ..serve.app import serve as run

    given = locals()
    limits = Limits(**{f.name: given[f.name] for f in fields(Limits)})
    encoder = Encoder.load(model, backend=backend, num_threads=threads, onnx_spinning=onnx_spinning)
    searchable = _load_index(index, encoder) if index else None
    hosts = [h.strip() for h in allowed_hosts.split(",") if h.strip()] if allowed_hosts else None
    run(encoder, host, port, limits, allowed_hosts=hosts, index=searchable, api_key=api_key)


def _load_index(path: Path, encoder):
    from ..search import Index

    return Index.load(path, encoder)

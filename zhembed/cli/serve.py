"""zhembed serve (the [serve] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import ModelOpt, app, needs


@app.command()
def serve(model: ModelOpt = None,
          backend: Annotated[str, typer.Option(help="auto (ONNX when exported), onnx or torch.")] = "auto",
          host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
          port: int = 8080,
          max_batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = 8192,
          max_wait_ms: Annotated[float, typer.Option(help="Longest wait for a batch to fill.")] = 2.0,
          max_queue: Annotated[int, typer.Option(help="Texts allowed to wait; beyond it: 503.")] = 4096,
          max_inputs: Annotated[int, typer.Option(help="Inputs per request.")] = 2048,
          max_chars: Annotated[int, typer.Option(help="Characters per input.")] = 20_000,
          threads: Annotated[Optional[int], typer.Option(help="Model threads (default: all cores).")] = None,
          index: Annotated[Optional[Path], typer.Option(help="A zhembed index to serve at POST /search.")] = None):
    """Serve an OpenAI-compatible /v1/embeddings API with dynamic batching (and /search over an index)."""
    needs("serve", "zhembed serve")
    if index:
        needs("search", "zhembed serve --index")
    from ..runtime import Encoder
    from ..serve.app import Limits
    from ..serve.app import serve as run

    encoder = Encoder.load(model, backend=backend, num_threads=threads, onnx_spinning=False)
    searchable = _load_index(index, encoder) if index else None
    run(encoder, host, port, Limits(max_inputs, max_chars, max_batch_tokens, max_wait_ms, max_queue), index=searchable)


def _load_index(path: Path, encoder):
    from ..search import Index

    return Index.load(path, encoder)

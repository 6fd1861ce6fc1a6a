"""Scale-out commands: embed-dataset and export-vectors (the [scale] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError, require
from ..scale.embed_dataset import EmbedConfig
from .common import BackendOpt, BatchOpt, MaxLenOpt, ModelOpt, app, config_from, defaults

E = defaults(EmbedConfig)  # every default written once, in EmbedConfig


@app.command("embed-dataset")
def embed_dataset_cmd(input: Annotated[Path, typer.Option("--input", "-i", help="A Parquet, JSONL, TSV (with a header row) or text file, or a folder of them.")],
                      output: Annotated[Path, typer.Option("--output", "-o", help="Folder of Parquet shards (input columns + embedding).")],
                      engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data actor pool).")] = "local",
                      ray_address: Annotated[Optional[str], typer.Option(help="Connect to this Ray cluster (default: start a local one).")] = None,
                      actors: Annotated[int, typer.Option(help="Ray actors; each loads the model once.")] = 2,
                      threads: Annotated[Optional[int], typer.Option(help="Model threads per actor (Ray: 1; local: all cores).")] = E.threads,
                      model: ModelOpt = E.model, backend: BackendOpt = E.backend,
                      text_field: Annotated[str, typer.Option(help="The column (field) holding the text.")] = E.text_field,
                      batch_size: BatchOpt = E.batch_size, max_length: MaxLenOpt = E.max_length,
                      rows_per_shard: Annotated[int, typer.Option(help="Rows per output shard (the unit of resume).")] = E.rows_per_shard) -> None:
    """Embed a dataset into Parquet shards, locally or on Ray; a rerun skips the shards already written."""
    require("scale", "zhembed embed-dataset")
    from ..scale.embed_dataset import embed_dataset

    cfg = config_from(EmbedConfig, locals())
    embed_dataset(input, output, cfg, engine, ray_address, actors, log=lambda msg: typer.echo(msg, err=True))


@app.command("export-vectors")
def export_vectors(input: Annotated[Path, typer.Option("--input", "-i", help="Shards written by embed-dataset.")],
                   collection: Annotated[str, typer.Option(help="Collection name (created if missing).")],
                   to: Annotated[str, typer.Option(help="Vector database.")] = "qdrant",
                   url: Annotated[Optional[str], typer.Option(help="Qdrant server, e.g. http://localhost:6333.")] = None,
                   path: Annotated[Optional[str], typer.Option(help="Qdrant local mode: a folder (or :memory:).")] = None,
                   id_field: Annotated[Optional[str], typer.Option(help="Column with each row's id (default: shard and row).")] = None,
                   batch_size: BatchOpt = 256) -> None:
    """Upsert embedded shards into a vector database, idempotently by id."""
    require("scale", "zhembed export-vectors")
    from ..scale.vector_export import export_to_qdrant, qdrant_client

    if to != "qdrant":
        raise ZhembedError(f"--to must be qdrant, got {to!r}")
    export_to_qdrant(input, qdrant_client(url, path), collection, id_field, batch_size,
                     log=lambda msg: typer.echo(msg, err=True))

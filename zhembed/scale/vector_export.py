"""Export embedded Parquet shards (from `zhembed embed-dataset`) to Qdrant, in batches, idempotently.

Each row becomes a point whose id is a UUID derived from the row's key: its `id_field` value, or
"<shard>:<row>". Re-running an export overwrites the same points instead of adding copies. The payload
holds the row's other columns and the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ZhembedError, require
from ..progress import Log

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://zhembed/points")


def point_id(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


def shard_files(input_dir: Path) -> list[Path]:
    files = sorted(p for p in Path(input_dir).glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise ZhembedError(f"{input_dir} holds no .parquet shards; write them with `zhembed embed-dataset`")
    return files


def points(input_dir: Path, id_field: str | None = None) -> Iterator[tuple[str, list[float], dict]]:
    """(point id, vector, payload) for every row of every shard, in shard and row order."""
    import pyarrow.parquet as pq

    for path in shard_files(input_dir):
        table = pq.read_table(path)
        if "embedding" not in table.column_names:
            raise ZhembedError(f"{path} has no 'embedding' column")
        if id_field and id_field not in table.column_names:
            raise ZhembedError(f"{path} has no id field {id_field!r} (columns: {', '.join(table.column_names)})")
        vectors = table.column("embedding").to_pylist()
        rows = table.drop_columns(["embedding"]).to_pylist()
        for i, (vector, payload) in enumerate(zip(vectors, rows)):
            key = id_key(payload[id_field], path, i) if id_field else f"{path.stem}:{i}"
            yield point_id(key), vector, {**payload, "zhembed_key": key}


def id_key(value: object, path: Path, row: int) -> str:
    """The point key of an id: a string as it is, an integer as `int:N` (so 1 and "1" stay two points);
    a missing (null) id is an error, never a shared point."""
    if value is None:
        raise ZhembedError(f"{path}: row {row + 1} has no id (null); fill the id column, or leave --id-field out "
                           "to key rows by shard and position")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ZhembedError(f"{path}: row {row + 1}: id {value!r} is {type(value).__name__}; ids are strings or integers")
    return value if isinstance(value, str) else f"int:{value}"


def qdrant_client(url: str | None = None, path: str | None = None) -> QdrantClient:
    """A client for a Qdrant server (`url`) or Qdrant's local on-disk mode (`path`, or ':memory:')."""
    require("scale", "exporting vectors", ("pyarrow", "qdrant_client"))
    from qdrant_client import QdrantClient

    if bool(url) == bool(path):
        raise ZhembedError("give --url (a Qdrant server) or --path (Qdrant's local mode), exactly one")
    return QdrantClient(url=url) if url else QdrantClient(location=":memory:") if path == ":memory:" \
        else QdrantClient(path=path)


def export_to_qdrant(input_dir: Path, client: QdrantClient, collection: str, id_field: str | None = None,
                     batch_size: int = 256, log: Log = print) -> int:
    """Upsert every row into `collection` (created with cosine distance if missing); returns the row count."""
    from qdrant_client import models

    count, batch = 0, []
    for point in points(input_dir, id_field):
        if count == 0:
            _ensure_collection(client, collection, len(point[1]), models)
        batch.append(models.PointStruct(id=point[0], vector=point[1], payload=point[2]))
        count += 1
        if len(batch) == batch_size:
            client.upsert(collection, points=batch, wait=True)
            batch = []
    if batch:
        client.upsert(collection, points=batch, wait=True)
    log(f"upserted {count} points into {collection}")
    return count


def _ensure_collection(client, collection: str, dim: int, models) -> None:
    if not client.collection_exists(collection):
        client.create_collection(collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        return
    size = client.get_collection(collection).config.params.vectors.size
    if size != dim:
        raise ZhembedError(f"collection {collection!r} holds vectors of size {size}, these have {dim}")

"""Batch embedding of datasets into Parquet shards, in one process or on Ray Data with an actor pool.

The unit of work is a shard: `rows_per_shard` consecutive rows of one input file. Each shard is encoded in
one `Encoder.encode` call and written atomically as OUT/<file>-<nnnnn>.parquet (the input's columns plus
`embedding`), so both engines compute every row identically, and a rerun skips the shards already written.

    local:  for each pending shard, in this process
    ray:    ray.data.from_arrow(pending shards, one block each).map_batches(ShardEmbedder, concurrency=N)
            -- each actor loads the model once, then embeds and writes whole shards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import write_atomic, write_text_atomic
from ..errors import ZhembedError, require
from ..progress import Log, progress
from ..runtime import Encoder, model_dir
from ..runtime.chunked import file_digest
from ..textio import read_table as read_user_table

if TYPE_CHECKING:
    import pyarrow as pa

INPUT_SUFFIXES = (".parquet", ".jsonl", ".json", ".tsv", ".txt")
MANIFEST = "_zhembed.json"


@dataclass
class EmbedConfig:
    model: str | None = None
    backend: str = "auto"
    text_field: str = "text"
    batch_size: int = 64
    max_length: int = 128
    rows_per_shard: int = 10_000
    threads: int | None = None  # per actor with Ray; all cores locally


@dataclass
class Shard:
    name: str
    table: object  # pyarrow.Table


def input_files(path: Path) -> list[Path]:
    """The file, or the supported files of a folder (sorted), or a clear error."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in INPUT_SUFFIXES and p.is_file())
        if not files:
            raise ZhembedError(f"{path} holds no {', '.join(INPUT_SUFFIXES)} files")
        return files
    if not path.exists():
        raise ZhembedError(f"input not found: {path}")
    return [path]


def read_table(path: Path, text_field: str) -> pa.Table:
    """A pyarrow Table of one input file (textio reads every user format), checked for `text_field`."""
    table = read_user_table(path, text_field)
    _check_texts(path, table, text_field)
    return table


def _check_texts(path: Path, table: pa.Table, text_field: str) -> None:
    if text_field not in table.column_names:
        raise ZhembedError(f"{path}: no field {text_field!r} (fields: {', '.join(table.column_names)})")
    if "embedding" in table.column_names:
        raise ZhembedError(f"{path} already has an 'embedding' column")
    for row, text in enumerate(table.column(text_field).to_pylist(), 1):
        if not isinstance(text, str) or not text.strip():
            raise ZhembedError(f"{path}: row {row}: {text_field!r} is {'empty' if text == '' else repr(text)}")


def shards(files: list[Path], cfg: EmbedConfig) -> Iterator[Shard]:
    if cfg.rows_per_shard < 1:
        raise ZhembedError(f"rows_per_shard must be positive, got {cfg.rows_per_shard}")
    for path in files:
        table = read_table(path, cfg.text_field)
        for i, start in enumerate(range(0, table.num_rows, cfg.rows_per_shard)):
            yield Shard(f"{path.name}-{i:05d}", table.slice(start, cfg.rows_per_shard))  # faq.txt, faq.jsonl: apart


class ShardEmbedder:
    """Loads the model once; each call embeds one whole shard and writes it atomically to `out`."""

    def __init__(self, cfg: EmbedConfig, out: str):
        self.cfg, self.out = cfg, Path(out)
        self.encoder = Encoder.load(cfg.model, backend=cfg.backend, num_threads=cfg.threads)

    def __call__(self, batch):
        """A Ray Data block: whole shards, each marked by `_shard` and its row count `_rows`."""
        import pyarrow as pa

        names, done, start = batch.column("_shard").to_pylist(), [], 0
        while start < len(names):
            name, rows = names[start], batch.column("_rows")[start].as_py()
            if names[start:start + rows] != [name] * rows:
                raise RuntimeError(f"shard {name} arrived split across blocks; it must be embedded whole")
            self.write(name, batch.slice(start, rows).drop_columns(["_shard", "_rows"]))
            done.append(name)
            start += rows
        return pa.table({"shard": done, "rows": [names.count(n) for n in done]})

    def write(self, name: str, table: pa.Table) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        texts = table.column(self.cfg.text_field).to_pylist()
        vectors = self.encoder.encode(texts, batch_size=self.cfg.batch_size, max_length=self.cfg.max_length,
                                      show_progress=False).astype(np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        write_atomic(self.out / f"{name}.parquet", lambda f: pq.write_table(table.append_column("embedding", column), f))


def _resolve_model(cfg: EmbedConfig) -> EmbedConfig:
    """Pin the model path before workers start, so every worker and every rerun loads the same model."""
    model = model_dir(cfg.model)
    return EmbedConfig(**{**asdict(cfg), "model": str(model)})


def _check_manifest(out: Path, cfg: EmbedConfig, files: list[Path]) -> None:
    """A rerun must use the same settings and the same input contents as the shards already written, or
    they would not match (an input that grew would leave rows out)."""
    manifest = {"config": asdict(cfg), "inputs": {str(f.resolve()): file_digest(f) for f in files}}
    path = out / MANIFEST
    if path.exists() and json.loads(path.read_text(encoding="utf-8")) != manifest:
        raise ZhembedError(f"{out} was written from other input contents or settings (see {path}); "
                           "use a new --output")
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def embed_dataset(input: Path, out: Path, cfg: EmbedConfig, engine: str = "local", ray_address: str | None = None,
                  actors: int = 2, log: Log = print) -> dict:
    """Embed every pending shard of `input` into `out`; returns rows, shards written and skipped, seconds."""
    require("scale", "embedding datasets", ("pyarrow",))
    if engine not in ("local", "ray"):
        raise ZhembedError(f"unknown --engine {engine!r}; choose local or ray")
    files = input_files(input)
    cfg = _resolve_model(cfg)
    out = Path(out)
    everything = list(shards(files, cfg))  # reads and checks every input before anything is written
    _check_manifest(out, cfg, files)
    pending = [s for s in everything if not (out / f"{s.name}.parquet").exists()]
    skipped = len(everything) - len(pending)
    log(f"{len(pending)} shards to embed, {skipped} already written")
    start = time.perf_counter()
    run = _run_ray if engine == "ray" else _run_local
    rows = run(pending, cfg, out, ray_address, actors, log) if pending else 0
    seconds = time.perf_counter() - start
    if rows:
        log(f"embedded {rows} rows in {seconds:.1f} s ({rows / seconds:.1f} rows/s)")
    return {"rows": rows, "shards": len(pending), "skipped": skipped, "seconds": seconds}


def _progress(total: int):
    return progress(None, total=total, desc="embed", unit="row")


def _run_local(pending: list[Shard], cfg: EmbedConfig, out: Path, _address, _actors, _log) -> int:
    embedder = ShardEmbedder(cfg, str(out))
    with _progress(sum(s.table.num_rows for s in pending)) as bar:
        for shard in pending:
            embedder.write(shard.name, shard.table)
            bar.update(shard.table.num_rows)
    return bar.n


def _run_ray(pending: list[Shard], cfg: EmbedConfig, out: Path, address: str | None, actors: int, log) -> int:
    import pyarrow as pa
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    threads = cfg.threads or 1
    tables = [s.table.append_column("_shard", pa.array([s.name] * s.table.num_rows))
              .append_column("_rows", pa.array([s.table.num_rows] * s.table.num_rows)) for s in pending]
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours below counts rows, not blocks
    ds = ray.data.from_arrow(tables).map_batches(
        ShardEmbedder, fn_constructor_kwargs={"cfg": EmbedConfig(**{**asdict(cfg), "threads": threads}), "out": str(out)},
        batch_size=None, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads)
    log(f"{actors} actors x {threads} threads on {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    with _progress(sum(t.num_rows for t in tables)) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            bar.update(sum(batch.column("rows").to_pylist()))
    return bar.n

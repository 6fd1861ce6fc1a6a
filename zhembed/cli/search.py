"""Search commands: index build/add, search, cluster (the [search] extra)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..atomic import write_text_atomic
from ..errors import ZhembedError, require
from ..textio import check_output
from .common import (BackendOpt, BatchOpt, MaxLenOpt, ModelOpt, SkipBadOpt, TextFieldOpt, app, load_encoder,
                     read_user_records)

index_app = typer.Typer(no_args_is_help=True, help="Build and extend a semantic search index over a corpus.",
                        callback=lambda: require("search", "zhembed index"))
app.add_typer(index_app, name="index")
AnnOpt = Annotated[str, typer.Option(help="auto (exact below 20,000 texts, else approximate: HNSW for fp32 and int8, "
                                          "RaBitQ IVF for binary), exact or hnsw (approximate).")]
IdFieldOpt = Annotated[Optional[str], typer.Option(help="Field or column with each text's id (default: its position).")]


def _index_from(input: Path, out: Path, records_from: tuple, model: str | None, backend: str, spec,
                first_stage: str | None = None, append: bool = False) -> None:
    """Build (or with `append`, extend) the index at `out` from `input`, read with `records_from` (text field,
    id field, skip bad lines); report what was done and what was truncated."""
    import time
    from dataclasses import replace

    from ..search.build import build_index
    from ..search.index import load_encoder as index_encoder
    from ..search.store import live_generation, read_live

    if out.exists() and not out.is_dir():
        raise ZhembedError(f"--out {out} is a file; an index is a folder: give a new folder name")
    records = read_user_records(input, *records_from)
    if append:  # the index's own model and backend
        meta = read_live(out)[1]
        encoder = index_encoder(meta.model, meta.backend)
    else:
        encoder = load_encoder(model, backend)
        spec = replace(spec, model=str(encoder.path) if model else None)  # None: the default model, any backend
    if first_stage is not None and not append:  # the cascade: index with the fast model, re-score with --model
        spec = replace(spec, rerank={"model": spec.model, "backend": encoder.backend.name,
                                     "model_id": encoder.model_id, "dim": encoder.dim})
        encoder = load_encoder(first_stage, "auto")
        spec = replace(spec, model=str(encoder.path))
    before = live_generation(out) if out.is_dir() else None
    start = time.perf_counter()
    index = build_index(records, out, encoder, replace(spec, show_progress=sys.stderr.isatty()), str(input), append)
    seconds = time.perf_counter() - start
    if before is not None and index.generation == before:
        typer.echo(f"zhembed: {input} is already in {out}; nothing to do", err=True)
        return
    meta = index.meta
    typer.echo(f"{out}: {len(index)} texts ({len(records.texts)} new, {len(records.texts) / seconds:.0f} texts/s), "
               f"{meta.faiss_index}, {meta.precision}, {meta.dimensions} dimensions, "
               f"{len(meta.segments)} segment{'s' * (len(meta.segments) > 1)}", err=True)
    cut = 0 if meta.chunk else encoder.truncated(records.texts, meta.max_length)
    if cut:
        typer.echo(f"zhembed: {cut} of {len(records.texts)} texts are longer than {meta.max_length} tokens "
                   "and were truncated; --max-length or --chunk keeps more", err=True)


@index_app.command("build")
def index_build(input: Annotated[Path, typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")],
                out: Annotated[Path, typer.Option(help="Index directory to create.")],
                model: ModelOpt = None, backend: BackendOpt = "auto", text_field: TextFieldOpt = None,
                id_field: IdFieldOpt = None, skip_bad: SkipBadOpt = False, ann: AnnOpt = "auto",
                batch_size: BatchOpt = 64, max_length: MaxLenOpt = 128,
                precision: Annotated[str, typer.Option(
                    help="fp32 (the vectors), int8 (8-bit codes, HNSW: 0.3 of the memory) or binary (RaBitQ: 1/25); int8 and binary rescore "
                         "their candidates with the exact vectors kept on disk.")] = "fp32",
                dimensions: Annotated[Optional[int], typer.Option(
                    help="Index only the first N components of each vector (Matryoshka), normalized again.")] = None,
                chunk: Annotated[bool, typer.Option(
                    "--chunk", help="Index long texts as overlapping passages; search returns each document's best "
                                    "passage with its character offsets.")] = False,
                first_stage: Annotated[Optional[str], typer.Option(
                    help="A fast model (e.g. zhembed-static-zh) that builds the index; search then re-scores its "
                         "top --rerank hits with --model.")] = None) -> None:
    """Embed a corpus into a new index; rerun the same command to resume a killed build."""
    from ..search.build import BuildSpec

    spec = BuildSpec(ann=ann, batch_size=batch_size, max_length=max_length, precision=precision,
                     dimensions=dimensions, chunk=chunk)
    _index_from(input, out, (text_field, id_field, skip_bad), model, backend, spec, first_stage)


@index_app.command("add")
def index_add(index: Annotated[Path, typer.Argument(help="An index directory.")],
              input: Annotated[Path, typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")],
              text_field: TextFieldOpt = None, id_field: IdFieldOpt = None, skip_bad: SkipBadOpt = False,
              batch_size: BatchOpt = 64) -> None:
    """Append a file's texts to an index as a new segment, with the model and settings it was built with."""
    from ..search.build import BuildSpec

    _index_from(input, index, (text_field, id_field, skip_bad), None, "auto", BuildSpec(batch_size=batch_size),
                append=True)


@app.command()
def search(index: Annotated[Path, typer.Argument(help="An index directory.")],
           queries: Annotated[list[str], typer.Argument(help="One or more queries.")],
           k: Annotated[int, typer.Option("-k", help="Hits per query.")] = 10,
           rerank: Annotated[int, typer.Option(help="In an index built with --first-stage: candidates the "
                                                    "second-stage model re-scores (0: none).")] = 100,
           as_json: Annotated[bool, typer.Option("--json", help="One JSON line per query.")] = False) -> None:
    """The nearest texts of an index for each query."""
    from dataclasses import asdict

    require("search", "zhembed search")
    from ..search import Index

    if rerank < 0:
        raise ZhembedError(f"--rerank must be 0 or more, got {rerank}")
    for query, hits in zip(queries, Index.load(index).search(queries, k, rerank)):
        if as_json:
            typer.echo(json.dumps({"query": query, "hits": [asdict(h) for h in hits]}, ensure_ascii=False))
            continue
        typer.echo(f"# {query}")
        for rank, hit in enumerate(hits, 1):
            where = f"\t[{hit.start}:{hit.end}]" if hit.start is not None else ""
            typer.echo(f"{rank}\t{hit.score:.4f}\t{hit.id}{where}\t{hit.text}")


@app.command()
def cluster(input: Annotated[Path, typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")],
            out: Annotated[Path, typer.Option(help="One cluster id per input line (-1: a skipped line).")],
            k: Annotated[Optional[int], typer.Option("-k", help="k-means with this many clusters.")] = None,
            threshold: Annotated[Optional[float], typer.Option(help="Cosine threshold for near-paraphrase communities.")] = None,
            summary: Annotated[Optional[Path], typer.Option(help="Cluster summary JSON (default: OUT + .summary.json).")] = None,
            top: Annotated[int, typer.Option(help="Central sentences per cluster in the summary.")] = 3,
            model: ModelOpt = None, backend: BackendOpt = "auto", text_field: TextFieldOpt = None,
            skip_bad: SkipBadOpt = False, batch_size: BatchOpt = 64, max_length: MaxLenOpt = 128, seed: int = 42) -> None:
    """Cluster a corpus by meaning: k-means (-k N) or threshold communities (--threshold T)."""
    import numpy as np

    require("search", "zhembed cluster")
    from ..search import cluster as cl

    if (k is None) == (threshold is None):
        raise ZhembedError("give -k N (k-means) or --threshold T (near-paraphrase communities), exactly one")
    summary = summary or out.with_name(out.name + ".summary.json")
    check_output(out, option="--out")
    check_output(summary, option="--summary")
    records = read_user_records(input, text_field, skip_bad=skip_bad)
    vectors = load_encoder(model, backend).encode(records.texts, batch_size=batch_size, max_length=max_length)
    labels = cl.kmeans(vectors, k, seed) if k is not None else cl.communities(vectors, threshold)
    per_line = np.full(records.total, -1, dtype=np.int64)
    per_line[records.rows] = labels
    groups = cl.summarize(vectors, labels, records.texts, top)
    write_text_atomic(summary, json.dumps(groups, ensure_ascii=False, indent=1) + "\n")
    write_text_atomic(out, "".join(f"{x}\n" for x in per_line))
    typer.echo(f"{len(groups)} clusters of {len(records.texts)} texts; labels in {out}, summary in {summary}", err=True)
    for group in groups[:10]:
        typer.echo(f"{group['cluster']}\t{group['size']}\t" + " | ".join(group["central"]))

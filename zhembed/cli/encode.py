"""Encoding commands: encode, similarity, info (the core install)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError
from .common import BackendOpt, BatchOpt, MaxLenOpt, ModelOpt, SkipBadOpt, TextFieldOpt, app, load_encoder, read_user_records


@app.command()
def encode(texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to encode.")] = None,
           input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Text (one per line), JSONL, TSV or Parquet.")] = None,
           text_field: TextFieldOpt = None, skip_bad: SkipBadOpt = False,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help=".npy or .jsonl (default: JSONL on stdout).")] = None,
           model: ModelOpt = None, backend: BackendOpt = "auto", batch_size: BatchOpt = 32, max_length: MaxLenOpt = 256,
           long: Annotated[str, typer.Option(help="Texts over --max-length tokens: truncate, or chunk (overlapping "
                                                  "windows, averaged).")] = "truncate",
           dimensions: Annotated[Optional[int], typer.Option(help="Vector size: one of the model's Matryoshka sizes.")] = None) -> None:
    """Encode texts given as arguments or in a file."""
    from ..textio import VECTOR_SUFFIXES, check_output, write_vectors

    if bool(texts) == bool(input):
        raise ZhembedError("give texts as arguments or --input FILE (exactly one of them)")
    if output:
        check_output(output, VECTOR_SUFFIXES)
    items = read_user_records(input, text_field, skip_bad=skip_bad).texts if input else list(texts)
    encoder = load_encoder(model, backend)
    vectors = encoder.encode(items, batch_size=batch_size, max_length=max_length, show_progress=bool(input),
                             long=long, dimensions=dimensions)
    cut = encoder.truncated(items, max_length) if long == "truncate" else 0
    if cut:
        typer.echo(f"zhembed: {cut} of {len(items)} texts are longer than {max_length} tokens and were truncated; "
                   "--long chunk embeds them whole", err=True)
    if output:
        write_vectors(output, items, vectors)
        typer.echo(f"wrote {len(items)} vectors of dimension {vectors.shape[1]} to {output}", err=True)
    else:
        for text, vec in zip(items, vectors):
            typer.echo(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}, ensure_ascii=False))


@app.command()
def similarity(source: Annotated[str, typer.Argument(help="The sentence to compare against.")],
               targets: Annotated[list[str], typer.Argument(help="One or more sentences.")],
               model: ModelOpt = None, backend: BackendOpt = "auto",
               calibrated: Annotated[bool, typer.Option("--calibrated", help="The probability that the texts match "
                                                        "(the model's calibration.json) instead of cosine.")] = False) -> None:
    """Cosine similarity of SOURCE with each TARGET, one line each."""
    for target, score in zip(targets, load_encoder(model, backend).similarity(source, targets, calibrated=calibrated)):
        typer.echo(f"{score:.4f}\t{target}")


@app.command()
def info(model: Annotated[Optional[str], typer.Argument(help="Model directory or shipped name (default: the shipped model).")] = None) -> None:
    """Describe a model directory: its kind (transformer or static), layers, sizes, parameters, prompt."""
    from ..modeldir import model_info
    from ..runtime import model_dir

    for key, value in model_info(model_dir(model)).items():
        typer.echo(f"{key}: {value!r}" if key == "prompt" else f"{key}: {value}")

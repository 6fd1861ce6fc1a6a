"""What every command shares: the Typer app, common options, and loading an encoder or a user's file."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Optional, TypeVar

import typer

if TYPE_CHECKING:
    from ..runtime import Encoder
    from ..textio import Records

Config = TypeVar("Config")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Small, fast Chinese sentence embeddings.")

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model directory (default: the shipped model).")]
BatchOpt = Annotated[int, typer.Option(help="Sentences per batch.")]
MaxLenOpt = Annotated[int, typer.Option(help="Truncate inputs to this many tokens.")]
BackendOpt = Annotated[str, typer.Option(help="auto (ONNX when exported, as the default model is), onnx or "
                                              "torch (the [train] extra).")]
TextFieldOpt = Annotated[Optional[str], typer.Option(help="JSONL/Parquet field or TSV column with the text (default: text).")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip bad lines (counted) instead of stopping at the first.")]


def load_encoder(model: str | None, backend: str = "auto") -> Encoder:
    """The encoder of a model directory (None: the default model)."""
    from ..runtime import Encoder

    return Encoder.load(model, backend=backend)


def read_user_records(path: Path, text_field: str | None, id_field: str | None = None,
                      skip_bad: bool = False) -> Records:
    """The texts of a user's file; skipped lines are reported on stderr."""
    from ..textio import read_records

    records = read_records(path, text_field, id_field, skip_bad)
    for message in records.skipped[:5]:
        typer.echo(f"zhembed: skipped {message}", err=True)
    if records.skipped:
        typer.echo(f"zhembed: skipped {len(records.skipped)} bad lines of {records.total}", err=True)
    return records


def defaults(config_class: type) -> SimpleNamespace:
    """The defaults of a config dataclass's fields, for a command's options: each is written once, there."""
    return SimpleNamespace(**{f.name: f.default for f in fields(config_class) if f.default is not MISSING})


def config_from(config_class: type[Config], given: dict, **overrides: object) -> Config:
    """The config from a command's parameters of the same names (a Path as a string; None as "" where the field's
    default is "", else None), then `overrides` for the fields the command reads differently (comma lists,
    resolved model paths)."""
    values = {}
    for f in fields(config_class):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif f.name in given:
            value = given[f.name]
            if value is None:
                values[f.name] = "" if f.default == "" else None
            else:
                values[f.name] = str(value) if isinstance(value, Path) else value
    return config_class(**values)

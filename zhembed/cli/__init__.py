"""The `zhembed` command line, one module per command group. A user mistake exits with status 2 and one
readable line, never a traceback; a command whose pip extra is missing says which one to install."""

from __future__ import annotations

import sys

import click
import typer

from ..errors import ZhembedError
from . import encode, eval, make, scale, search, serve, train  # noqa: F401  (each registers its commands)
from .common import app

__all__ = ["app", "main"]


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

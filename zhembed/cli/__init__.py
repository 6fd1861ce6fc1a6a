"""The `zhembed` command line, one module per command group. A user mistake exits with status 2 and one
readable line, never a traceback; a command whose pip extra is missing says which one to install."""

from __future__ import annotations

import errno
import signal
import sys

import click
import typer

from ..atomic import Stopped, check_not_stopped, stop
from ..errors import ZhembedError
from . import encode, eval, make, scale, search, serve, train  # noqa: F401  (each registers its commands)
from .common import app

__all__ = ["app", "main"]


# typer-slim runs on click; typer >= 0.22 (which transformers pulls in, over typer-slim's files) on its own copy
# of click. Usage errors and aborts come from either.
USAGE_ERRORS = tuple({click.ClickException, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})
ABORTS = tuple({click.exceptions.Abort, typer.Abort})


INTERRUPTED = "zhembed: interrupted (nothing was written for the unfinished step)"
TERMINATED = "zhembed: terminated (nothing was written for the unfinished step)"


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error on a user's input or output, naming the path and the fix."""
    if e.errno is None:  # e.g. numpy's short write: no errno, no file name
        return f"a write failed: {e} (the disk may be full, or a file size limit (ulimit -f) was reached)"
    what = e.filename or "a file"
    hints = {errno.ENOSPC: "free some disk space", errno.EFBIG: "the file size limit (ulimit -f) was hit",
             errno.EACCES: "check its permissions", errno.EPERM: "check its permissions and attributes",
             errno.EISDIR: "give a file name, not a folder", errno.ENOTDIR: "a part of the path is not a folder",
             errno.EROFS: "the file system is read-only", errno.EEXIST: "choose a name that does not exist"}
    hint = hints.get(e.errno, "check the path")
    return f"{what}: {e.strerror or e} ({hint})"


def main() -> None:
    """Entry point: run the app, turning user mistakes into one line on stderr. Ctrl-C exits with status 130
    and SIGTERM with 143, each with one line (writers leave no partial output: they write through atomic, which
    commits nothing after a signal). Both signals raise atomic.Stopped rather than KeyboardInterrupt: CPython 3.11
    exits by SIGINT, whatever the handler did, when a KeyboardInterrupt passed through an extension's nested
    PyRun call (torch's lazy imports), and a library may swallow one and carry on."""
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        try:
            code = app(standalone_mode=False)
        except Exception:  # a library that turned the signal into its own error (an extension's import that it
            check_not_stopped()  # interrupted: "initialization failed") is reported as the signal
            raise
    except ZhembedError as e:
        typer.echo(f"zhembed: error: {e}", err=True)
        sys.exit(2)
    except FileNotFoundError as e:
        typer.echo(f"zhembed: error: {e.filename or e}: not found", err=True)
        sys.exit(2)
    except OSError as e:
        typer.echo(f"zhembed: error: {os_error_line(e)}", err=True)
        sys.exit(2)
    except Stopped as e:
        typer.echo(INTERRUPTED if e.signum == signal.SIGINT else TERMINATED, err=True)
        sys.exit(128 + e.signum)
    except USAGE_ERRORS as e:
        e.show()
        sys.exit(e.exit_code)
    except ABORTS:
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
    if isinstance(code, int) and code:  # typer returns, rather than raises, Exit codes
        sys.exit(code)

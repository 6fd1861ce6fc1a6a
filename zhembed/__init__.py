"""zhembed: small, fast Chinese sentence embeddings, and the pipeline that distils them."""

from .errors import ZhembedError
from .runtime import Encoder

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zhembed")  # written once, in pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["Encoder", "Index", "ZhembedError", "__version__"]


def __getattr__(name: str):
    """`zhembed.Index` is imported on first use: search needs the [search] extra, encoding does not."""
    if name == "Index":
        from .search import Index

        return Index
    raise AttributeError(f"module 'zhembed' has no attribute {name!r}")

"""zhembed: small, fast Chinese sentence embeddings, and the pipeline that distils them."""

from .errors import ZhembedError
from .runtime import Encoder

__version__ = "0.1.0"
__all__ = ["Encoder", "Index", "ZhembedError", "__version__"]


def __getattr__(name: str):
    """`zhembed.Index` is imported on first use: search needs the [search] extra, encoding does not."""
    if name == "Index":
        from .search import Index

        return Index
    raise AttributeError(f"module 'zhembed' has no attribute {name!r}")

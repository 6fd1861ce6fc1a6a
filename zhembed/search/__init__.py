"""Search and clustering over encoded texts, on faiss (the [search] extra)."""

from ..errors import require

require("search", "search and clustering", ("faiss",))

from .index import Index  # noqa: E402

__all__ = ["Index"]

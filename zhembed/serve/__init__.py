"""The HTTP server: an OpenAI-compatible embeddings API with a batching queue (the [serve] extra)."""

from ..errors import require

require("serve", "zhembed serve")

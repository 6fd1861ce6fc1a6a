"""The HTTP server: an OpenAI-compatible embeddings API with a batching queue (the [serve] extra; `zhembed
serve` checks for it before importing serve.app). serve.limits needs nothing beyond the standard library."""

"""Scale-out: embed datasets into Parquet shards (locally or on Ray) and export them to a vector database
(the [scale] extra). The modules import without it, so the CLI reads their config defaults in the core install;
their entry points require it."""

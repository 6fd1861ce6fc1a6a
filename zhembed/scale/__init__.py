"""Scale-out: embed datasets into Parquet shards (locally or on Ray) and export them to a vector database
(the [scale] extra)."""

from ..errors import require

require("scale", "embedding datasets", ("pyarrow",))

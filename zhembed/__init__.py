"""zhembed: small, fast Chinese sentence embeddings, and the pipeline that distils them."""

from .encoder import Encoder
from .errors import ZhembedError
from .index import Index

__version__ = "0.1.0"
__all__ = ["Encoder", "Index", "ZhembedError", "__version__"]

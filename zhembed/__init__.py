"""zhembed: small, fast Chinese sentence embeddings, and the pipeline that distils them."""

from .encoder import Encoder
from .errors import ZhembedError

__version__ = "0.1.0"
__all__ = ["Encoder", "ZhembedError", "__version__"]

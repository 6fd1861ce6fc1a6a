"""The runtime: tokenizer, ONNX (or torch) backend, pooling and the Encoder; where models live.

It needs numpy, tokenizers and onnxruntime only, and never imports the code that makes or trains models.
"""

from .encoder import Encoder, check_texts, length_batches
from .locations import SHIPPED_MODEL, default_model_dir, zhembed_home

__all__ = ["SHIPPED_MODEL", "Encoder", "check_texts", "default_model_dir", "length_batches", "zhembed_home"]

"""The runtime: tokenizer, ONNX (or torch) backend, pooling and the Encoder; where models live.

It needs numpy, tokenizers and onnxruntime only, and never imports the code that makes or trains models.
"""

from .encoder import Encoder, check_texts, length_batches
from .locations import SHIPPED_MODEL, SHIPPED_STATIC, default_model_dir, model_dir, zhembed_home

__all__ = ["SHIPPED_MODEL", "SHIPPED_STATIC", "Encoder", "check_texts", "default_model_dir", "length_batches", "model_dir",
           "zhembed_home"]

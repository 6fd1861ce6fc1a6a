"""Model backends: given padded token ids and an attention mask, return the last hidden states.

Pooling, normalization, batching and tokenization live in the Encoder, so every backend is only the
transformer forward pass. ONNX (onnxruntime) is the runtime's own engine; torch needs the [train] extra.
"""

from __future__ import annotations

import functools
import os
import queue
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ZhembedError, require
from ..modeldir import WEIGHT_FILES


class Backend(Protocol):
    name: str
    weights_file: Path  # the file whose numbers it runs: the model's identity, with its tokenizer
    threads: int

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[batch, seq] int64 ids and mask -> [batch, seq, hidden] float32 hidden states."""

    def lane(self) -> Backend | None:
        """A backend that runs one batch on one thread, safe to call from `threads` threads at once, so that
        whole batches run side by side, one per core; None when batches must run one at a time."""


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class TorchBackend:
    """transformers' AutoModel in fp32 on the CPU, without gradients. `model` is the torch module itself:
    training (train/common.trainable_module) updates it in place, so encode sees the trained weights."""

    name = "torch"
    model: object  # a transformers PreTrainedModel

    def __init__(self, model_dir: Path, num_threads: int | None = None):
        require("train", "the torch backend", ("torch", "transformers"))
        import torch
        from transformers import AutoModel
        from transformers.utils import logging

        logging.disable_progress_bar()
        self.threads = num_threads or default_threads()
        self.weights_file = next((Path(model_dir) / f for f in WEIGHT_FILES if (Path(model_dir) / f).exists()),
                                 Path(model_dir) / WEIGHT_FILES[0])
        torch.set_num_threads(self.threads)
        try:
            self.model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        except Exception as e:  # transformers raises many types for a broken directory
            raise ZhembedError(f"cannot load model weights from {model_dir}: {str(e).splitlines()[0]}") from None
        self._torch = torch

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
        return out.last_hidden_state.numpy()

    def lane(self) -> None:
        """None: torch already runs one batch on every core, and training updates this one module."""
        return None


GRAPH_LEVELS = ("disable", "basic", "extended", "all")
SPIN_MODES = ("always", "within-runs", "never")


class OnnxBackend:
    """onnxruntime on the CPU: neither torch nor transformers is imported."""

    def __init__(self, onnx_file: Path, num_threads: int | None = None, graph_optimization: str = "all",
                 spinning: str = "always"):
        """`spinning`: whether idle intra-op threads busy-wait for the next op. "always" is fastest for
        back-to-back batches; "within-runs" spins between the ops of one run but sleeps between runs, which
        keeps a single request's latency and leaves the cores to other work, such as a server's event loop,
        between batches; "never" sleeps whenever a thread is idle."""
        import onnxruntime as ort

        if graph_optimization not in GRAPH_LEVELS:
            raise ZhembedError(f"graph optimization must be one of {', '.join(GRAPH_LEVELS)}, got {graph_optimization!r}")
        if spinning not in SPIN_MODES:
            raise ZhembedError(f"onnx spinning must be one of {', '.join(SPIN_MODES)}, got {spinning!r}")
        opts = ort.SessionOptions()
        self.threads = num_threads or default_threads()
        opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if spinning == "never" else "1")
        if spinning == "within-runs":
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, {
            "disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
            "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}[graph_optimization])
        try:
            self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ZhembedError(f"cannot load ONNX model {onnx_file}: {str(e).splitlines()[0]}") from None
        self.name = "onnx-int8" if "qint8" in Path(onnx_file).name else "onnx"
        self.weights_file = Path(onnx_file)
        self._settings = (graph_optimization, spinning)

    def lane(self) -> OnnxLane | None:
        """One-thread sessions that several threads run at once, one batch each (OnnxLane). onnxruntime
        splits every op of one batch between its threads, and they exchange each op's output; on a VM whose
        two vCPUs the host places on different dies, that exchange made a 2-thread batch as slow as one
        thread, for seconds at a time (docs/RESULTS.md). Whole batches per core share nothing but the file
        they were loaded from."""
        return self._lane if self.threads > 1 else None

    @functools.cached_property
    def _lane(self) -> OnnxLane:
        return OnnxLane(self.weights_file, self._settings)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class OnnxLane:
    """One batch on one thread, callable from several threads at once: each call takes an idle one-thread
    session, made on first need (0.04 s and about 24 MB each for the int8 model), so there are as many as
    calls ever ran at once. Two threads running one shared session made 5 of 20 fresh processes about 20%
    slower (docs/RESULTS.md); with a session each, none."""

    name = "onnx-lane"
    threads = 1

    def __init__(self, onnx_file: Path, settings: tuple[str, str]):
        self.weights_file, self._settings = Path(onnx_file), settings
        self._idle: queue.SimpleQueue[OnnxBackend] = queue.SimpleQueue()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        try:
            session = self._idle.get_nowait()
        except queue.Empty:
            session = OnnxBackend(self.weights_file, 1, *self._settings)
        try:
            return session(input_ids, attention_mask)
        finally:
            self._idle.put(session)

    @property
    def sessions(self) -> int:
        """How many one-thread sessions are idle now (all of them, between calls)."""
        return self._idle.qsize()

    def lane(self) -> None:
        return None

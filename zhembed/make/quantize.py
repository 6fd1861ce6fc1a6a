"""Static int8 quantization of an exported encoder: a text gets the same vector in any batch.

onnxruntime's dynamic quantization computes one activation scale over the whole padded batch, so a text's
vector depended on its neighbours (cosine 0.990 between alone and in a batch of 64), and a few activation
channels with values 20-60 times the median (LLM.int8()'s outlier features) cost precision for all others
(cosine 0.991 to fp32). Here:

1. Calibration sentences run through the fp32 graph; for the input X of every weight MatMul we record each
   channel's range.
2. Outlier channels (range above OUTLIER_RATIO times the median channel's) leave the int8 path: their
   weight rows are zeroed there, and a small fp32 MatMul over just those channels (a Gather) is added.
3. onnxruntime quantizes the weights (int8, per output channel; the embedding table too) and the graph's
   DynamicQuantizeLinear nodes become QuantizeLinear with the calibrated scale and zero point of the
   non-outlier channels (outliers saturate there, and their int8 weight rows are zero).

So activation scales are constants: a text's vector no longer depends on its batch, and outliers keep full
precision (cosine to fp32 0.999 on the shipped model), at the speed of the int8 kernels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ZhembedError

if TYPE_CHECKING:
    import onnx

OUTLIER_RATIO = 6.0
CALIBRATION_BATCH = 16


def activation_ranges(fp32: Path, tensors: list[str], batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Per tensor: per-channel (min, max) over all calibration batches (padding included, as at run time)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(fp32))
    model.graph.output.extend([helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    for input_ids, mask in batches:
        for name, value in zip(tensors, session.run(tensors, {"input_ids": input_ids, "attention_mask": mask})):
            flat = value.reshape(-1, value.shape[-1])
            lo[name] = np.minimum(lo.get(name, np.inf), flat.min(0))
            hi[name] = np.maximum(hi.get(name, -np.inf), flat.max(0))
    return {t: (lo[t], hi[t]) for t in tensors}


def split_outliers(model: onnx.ModelProto, ranges: dict) -> tuple[dict[str, np.ndarray], list[str]]:
    """Move outlier input channels of each weight MatMul to an fp32 side path (in place); returns the kept
    channels per input tensor and the names of the side MatMuls (to leave unquantized)."""
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    keep, side, nodes = {}, [], []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights or node.input[0] not in ranges:
            nodes.append(node)
            continue
        x, w_name = node.input
        lo, hi = ranges[x]
        size = np.maximum(np.abs(lo), np.abs(hi))
        outliers = np.flatnonzero(size > OUTLIER_RATIO * np.median(size))
        keep[x] = np.setdiff1d(np.arange(len(size)), outliers)
        if not len(outliers):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[w_name]).copy()
        prefix = f"{node.name or w_name}/outliers"
        model.graph.initializer.extend([numpy_helper.from_array(outliers.astype(np.int64), f"{prefix}/channels"),
                                        numpy_helper.from_array(w[outliers].astype(np.float32), f"{prefix}/weight")])
        w[outliers] = 0
        weights[w_name].CopyFrom(numpy_helper.from_array(w, w_name))
        y = node.output[0]
        node.output[0] = f"{prefix}/int8_part"
        side.append(f"{prefix}/matmul")
        nodes += [node,
                  helper.make_node("Gather", [x, f"{prefix}/channels"], [f"{prefix}/x"], f"{prefix}/gather", axis=-1),
                  helper.make_node("MatMul", [f"{prefix}/x", f"{prefix}/weight"], [f"{prefix}/y"], side[-1]),
                  helper.make_node("Add", [node.output[0], f"{prefix}/y"], [y], f"{prefix}/add")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return keep, side


def freeze_activation_scales(model: onnx.ModelProto, ranges: dict, keep: dict[str, np.ndarray]) -> None:
    """Each DynamicQuantizeLinear becomes QuantizeLinear with the uint8 scale and zero point of its input's
    calibrated range over the kept channels (in place)."""
    from onnx import helper, numpy_helper

    nodes = []
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in ranges:
            raise ZhembedError(f"static quantization: no calibrated range for {x}")
        lo, hi = ranges[x]
        channels = keep.get(x, slice(None))
        rmin, rmax = min(0.0, float(lo[channels].min())), max(0.0, float(hi[channels].max()))
        scale = max(rmax - rmin, 1e-8) / 255.0
        zero = int(np.clip(round(-rmin / scale), 0, 255))
        _, scale_name, zero_name = node.output
        model.graph.initializer.extend([numpy_helper.from_array(np.asarray(scale, np.float32), scale_name),
                                        numpy_helper.from_array(np.asarray(zero, np.uint8), zero_name)])
        nodes.append(helper.make_node("QuantizeLinear", [x, scale_name, zero_name], [node.output[0]],
                                      f"{node.name}/static"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def quantize_static(fp32: Path, dst: Path, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Write the static int8 model of `fp32` to `dst`; returns what was done (for the model card)."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not batches:
        raise ZhembedError("static int8 quantization needs calibration sentences")
    model = onnx.load(str(fp32))
    weights = {i.name for i in model.graph.initializer}
    inputs = sorted({n.input[0] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights})
    ranges = activation_ranges(fp32, inputs, batches)
    keep, side = split_outliers(model, ranges)
    split = dst.with_name(dst.name + ".split.tmp")
    onnx.save(model, str(split))
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # its advice to pre-process the model concerns its own static quantizer
    try:
        quantize_dynamic(str(split), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                         per_channel=True, nodes_to_exclude=side,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    finally:
        root.setLevel(level)
        split.unlink(missing_ok=True)
    quantized = onnx.load(str(dst))
    freeze_activation_scales(quantized, ranges, keep)
    onnx.save(quantized, str(dst))
    outliers = {x: int(len(ranges[x][0]) - len(k)) for x, k in keep.items() if len(k) < len(ranges[x][0])}
    return {"method": "static int8", "calibration_batches": len(batches), "outlier_channels": outliers}

"""For onnxruntime's CPU kernels: SkipLayerNormalization -> Add, Add(bias), LayerNormalization.

onnxruntime's CPU SkipLayerNormalization (contrib_ops/cpu/skip_layer_norm.cc) normalises each row
in a scalar loop with a division per element; the opset-17 LayerNormalization kernel does not.
Measured on onnxruntime 1.32 (bench/fusion_latency.py's machine, 2 threads, hidden size 768), one
SkipLayerNormalization takes 50 / 268 / 779 us at 16 / 128 / 384 rows, the three ops it becomes
here 14 / 90 / 175 us. On GPUs the fused kernel is the fast one, so this pass runs only for targets
whose first provider runs onnxruntime's CPU kernels.

onnxruntime fuses ``LayerNormalization(Add(a, b))`` (a and b 3-D of the same shape) back into
SkipLayerNormalization when a session is created (core/optimizer/skip_layer_norm_fusion.cc), and
also ``Add(Add(a, bias), b)`` and ``Add(a, Add(b, bias))``. It does not fuse
``Add(Add(a, b), bias)``: its first Add must have two 3-D inputs. So the sum is taken in that
order, and a SkipLayerNormalization without a bias gets a zero bias (one cheap Add; it still
beats the fused kernel 3x). tests/fusions/test_split_skip_norm.py checks that a session keeps the
split form.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeformer.fusions.miss_reasons import Skipped, skip
from edgeformer.graph_edits import add_initializer, replace_value

LAYER_NORM_OPSET = 17


def _hidden_size(gamma: ir.Value) -> int | None:
    if gamma.shape is None or gamma.shape.rank() != 1 or not isinstance(gamma.shape[0], int):
        return None
    return gamma.shape[0]


def _why_not(node: ir.Node, x: ir.Value | None, skip_in: ir.Value | None, gamma: ir.Value | None) -> str | None:
    """Why a SkipLayerNormalization cannot be split; None when it can."""
    outputs = list(node.outputs) + [None] * (4 - len(node.outputs))
    if any(v is not None and (v.uses() or v.is_graph_output()) for v in outputs[1:3]):
        return "its mean or inverse-std output is used (LayerNormalization here gives neither)"
    if x is None or skip_in is None or gamma is None:
        return "its input, skip or gamma is missing"
    if gamma.dtype is None or _hidden_size(gamma) is None:
        return f"gamma {gamma.name} has no known dtype and 1-D size (the hidden size)"
    return None


def split_skip_layer_norm(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Rewrite every SkipLayerNormalization whose mean / inverse-std outputs are unused; returns the
    count. The others are recorded in ``skipped`` with the reason."""
    graph = model.graph
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    split = 0
    for node in list(graph):
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            continue
        inputs = list(node.inputs) + [None] * (5 - len(node.inputs))
        x, skip_in, gamma, beta, bias = inputs[:5]
        outputs = list(node.outputs) + [None] * (4 - len(node.outputs))
        reason = _why_not(node, x, skip_in, gamma)
        if opset < LAYER_NORM_OPSET:
            reason = f"the model's opset {opset} has no LayerNormalization op (it needs {LAYER_NORM_OPSET})"
        hidden = _hidden_size(gamma) if gamma is not None else None
        if reason is not None or x is None or skip_in is None or gamma is None or gamma.dtype is None or hidden is None:
            skip(skipped, node, reason or "its inputs are incomplete")  # the second half narrows the types
            continue
        stem = node.name or "skip_layer_norm"
        if bias is None:
            zeros = np.zeros(hidden, dtype=gamma.dtype.numpy())
            bias = add_initializer(graph, f"{stem}.zero_bias", zeros)
        add = ir.node("Add", [x, skip_in], name=f"{stem}_add")
        add_bias = ir.node("Add", [add.outputs[0], bias], name=f"{stem}_add_bias")
        epsilon = node.attributes.get("epsilon")
        attributes: dict[str, int | float] = {"axis": -1}
        if epsilon is not None:
            attributes["epsilon"] = epsilon.as_float()
        norm_inputs = [add_bias.outputs[0], gamma] + ([beta] if beta is not None else [])
        norm = ir.node("LayerNormalization", norm_inputs, attributes=attributes, name=f"{stem}_norm")
        graph.insert_before(node, [add, add_bias, norm])
        for old, new in ((outputs[0], norm.outputs[0]), (outputs[3], add_bias.outputs[0])):
            if old is not None:
                replace_value(old, new)
        add.outputs[0].shape, add.outputs[0].type = x.shape, x.type
        graph.remove(node, safe=True)
        split += 1
    return split

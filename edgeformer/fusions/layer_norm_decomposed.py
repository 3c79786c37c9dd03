"""LayerNormalization -> the ops it is made of, for providers without it (NNAPI).

NNAPI's list (onnxruntime/tools/mobile_helpers/nnapi_supported_ops.md) has no LayerNormalization,
but has every op of its definition over the last axis::

    mean = ReduceMean(x); d = x - mean; var = ReduceMean(d * d)
    y = d / Sqrt(var + epsilon) * scale + bias

so the graph stays in one NNAPI partition instead of leaving it at every norm.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern


class DecomposeLayerNorm(pattern.RewriteRuleClassBase):
    """LayerNormalization(x, scale, bias) over the last axis -> ReduceMean / Sub / Mul / Sqrt / Div."""

    def pattern(self, op, x, scale, bias):
        return op.LayerNormalization(x, scale, bias, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, scale, bias, out, **_):
        result = pattern.MatchResult()
        node = out.producer()
        axis = node.attributes.get("axis")
        rank = x.shape.rank() if x.shape is not None else None
        if axis is not None and axis.as_int() != -1 and (rank is None or axis.as_int() != rank - 1):
            return result.fail("the norm is not over the last axis", x)
        if len(node.outputs) > 1 and any(o.uses() for o in node.outputs[1:]):
            return result.fail("the mean or inverse std-dev output is used", out)
        if x.dtype is not None and x.dtype != ir.DataType.FLOAT:
            return result.fail("the input is not float32", x)
        return result

    def rewrite(self, op, x, scale, bias, out, **_):
        eps = out.producer().attributes.get("epsilon")
        epsilon = op.Constant(value=ir.tensor(np.array(eps.as_float() if eps else 1e-5, dtype=np.float32)))
        axes = op.Constant(value_ints=[-1])
        centred = op.Sub(x, op.ReduceMean(x, axes, keepdims=1))  # (B, S, C)
        variance = op.ReduceMean(op.Mul(centred, centred), axes, keepdims=1)  # (B, S, 1)
        normed = op.Div(centred, op.Sqrt(op.Add(variance, epsilon)))
        return op.Add(op.Mul(normed, scale), bias)


rules = pattern.RewriteRuleSet([DecomposeLayerNorm.rule()])

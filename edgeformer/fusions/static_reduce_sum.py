"""ReduceSum over fixed-size axes -> ReduceMean times the count, for providers without ReduceSum (NNAPI).

Mean pooling (sum of masked states / number of tokens) writes ReduceSum; NNAPI has ReduceMean
only. Once a static-shape target has fixed the sizes, sum = mean * n exactly (up to rounding).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern


class StaticReduceSum(pattern.RewriteRuleClassBase):
    """ReduceSum(x, axes) -> ReduceMean(x, axes) * n, where the reduced sizes multiply to n."""

    def pattern(self, op, x, axes):
        return op.ReduceSum(x, axes, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, axes, out, **_):
        result = pattern.MatchResult()
        if axes.const_value is None or axes.const_value.numpy().size == 0:
            return result.fail("the axes are not constant (or empty: every axis)", axes)
        if x.dtype != ir.DataType.FLOAT:
            return result.fail("the input is not float32", x)
        if x.shape is None or not all(isinstance(d, int) for d in self._sizes(x, axes)):
            return result.fail("the reduced axes have no fixed size (fix the shapes first)", x)
        return result

    @staticmethod
    def _sizes(x, axes) -> list:
        rank = x.shape.rank()
        return [x.shape[int(a) % rank] for a in axes.const_value.numpy().ravel()]

    def rewrite(self, op, x, axes, out, **_):
        keep = out.producer().attributes.get("keepdims")
        count = int(np.prod(self._sizes(x, axes)))
        mean = op.ReduceMean(x, axes, keepdims=keep.as_int() if keep is not None else 1)
        return op.Mul(mean, op.Constant(value=ir.tensor(np.array(count, dtype=np.float32))))


rules = pattern.RewriteRuleSet([StaticReduceSum.rule()])

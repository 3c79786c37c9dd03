"""Boolean attention masks become additive biases, so attention fuses with its mask.

torch's ``scores.masked_fill(~mask, min)`` exports as ``Where(Not(mask), min, scores)``; the
attention fusions (and onnxruntime's MultiHeadAttention ``attention_bias`` input) take an
additive bias instead: ``scores + Where(mask, 0, min)``. The bias depends only on the mask, so
it is computed once and shared by every layer (common-subexpression elimination merges copies).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

LARGE_NEGATIVE = -1e30  # fills at or below this count as "masked out"


class MaskToBias(pattern.RewriteRuleClassBase):
    """Where(Not(mask), fill, scores) -> Add(scores, Where(mask, 0, fill)) for a very negative fill."""

    def pattern(self, op, masked_out, fill, scores):  # type: ignore[no-untyped-def]
        return op.Where(masked_out, fill, scores)

    def check(self, context, masked_out, fill, scores, **_):  # type: ignore[no-untyped-def]
        result = pattern.MatchResult()
        producer = masked_out.producer()
        if producer is None or producer.op_type != "Not" or producer.domain not in ("", "ai.onnx"):
            return result.fail("the condition is not Not(mask)", masked_out)
        value = fill.const_value
        if value is None or value.numpy().size != 1:
            return result.fail("the fill value is not a constant scalar", fill)
        if float(value.numpy().reshape(())) > LARGE_NEGATIVE:
            return result.fail(
                f"the fill value {float(value.numpy().reshape(()))} does not mask (> {LARGE_NEGATIVE})", fill
            )
        if scores.dtype is not None and scores.dtype != ir.DataType.FLOAT:
            return result.fail("scores are not float32", scores)
        return result

    def rewrite(self, op, masked_out, fill, scores, **_):  # type: ignore[no-untyped-def]
        mask = masked_out.producer().inputs[0]
        zero = op.Constant(value=ir.tensor(np.array(0.0, dtype=np.float32)))
        return op.Add(scores, op.Where(mask, zero, fill))


FINITE_FILL = -1e9  # far below any attention score, yet a row of it still softmaxes to uniform weights


class FiniteMaskFill(pattern.RewriteRuleClassBase):
    """Where(mask, 0, fill) -> Where(mask, 0, -1e9) for the bias MaskToBias writes.

    For a query whose every key is masked (a left-padded position), torch's softmax over the fill
    gives uniform weights; onnxruntime's kernel for the standard Attention op gives another answer
    when the bias holds the lowest float. A finite fill keeps softmax's answer, so the outputs at
    padded positions stay comparable with the torch source, and masked keys still get weight 0.
    """

    def pattern(self, op, mask, zero, fill):  # type: ignore[no-untyped-def]
        return op.Where(mask, zero, fill)

    def check(self, context, mask, zero, fill, **_):  # type: ignore[no-untyped-def]
        result = pattern.MatchResult()
        for name, value in (("zero", zero), ("fill", fill)):
            if value.const_value is None or value.const_value.numpy().size != 1:
                return result.fail(f"the {name} branch is not a constant scalar", value)
        if float(zero.const_value.numpy().reshape(())) != 0.0:
            return result.fail("the kept branch is not 0", zero)
        if float(fill.const_value.numpy().reshape(())) > LARGE_NEGATIVE:
            return result.fail("the fill is already finite", fill)
        return result

    def rewrite(self, op, mask, zero, fill, **_):  # type: ignore[no-untyped-def]
        dtype = fill.const_value.numpy().dtype
        return op.Where(mask, zero, op.Constant(value=ir.tensor(np.array(FINITE_FILL, dtype=dtype))))


rules = pattern.RewriteRuleSet([MaskToBias.rule()])
finite_fill_rules = pattern.RewriteRuleSet([FiniteMaskFill.rule()])

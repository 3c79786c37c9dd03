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


# Far enough below any attention score that fill + score rounds to fill in float32 (its spacing near
# 1e29 is about 1e22), so a row whose every key is masked softmaxes to exactly uniform weights as in
# torch, whatever the scores; -1e9 (spacing 64) let trained weights' scores of a few hundred through.
# Above LARGE_NEGATIVE, so the rule does not match its own output.
FINITE_FILL = -1e29


class FiniteMaskFill(pattern.RewriteRuleClassBase):
    """Where(mask, 0, fill) -> Where(mask, 0, FINITE_FILL) for the bias MaskToBias writes.

    For a query whose every key is masked (a left-padded position), torch's softmax over the fill
    gives uniform weights; onnxruntime's kernel for the standard Attention op gives another answer
    when the bias holds the lowest float. A finite fill keeps softmax's answer, so the outputs at
    padded positions stay comparable with the torch source, and masked keys still get weight 0.
    """

    def pattern(self, op, mask, zero, fill):  # type: ignore[no-untyped-def]
        return op.Where(mask, zero, fill)

    threshold = LARGE_NEGATIVE  # fills at or below this are replaced

    def check(self, context, mask, zero, fill, **_):  # type: ignore[no-untyped-def]
        result = pattern.MatchResult()
        for name, value in (("zero", zero), ("fill", fill)):
            if value.const_value is None or value.const_value.numpy().size != 1:
                return result.fail(f"the {name} branch is not a constant scalar", value)
        if float(zero.const_value.numpy().reshape(())) != 0.0:
            return result.fail("the kept branch is not 0", zero)
        if float(fill.const_value.numpy().reshape(())) > self.threshold:
            return result.fail("the fill is already finite", fill)
        return result

    def rewrite(self, op, mask, zero, fill, **_):  # type: ignore[no-untyped-def]
        dtype = fill.const_value.numpy().dtype
        return op.Where(mask, zero, op.Constant(value=ir.tensor(np.array(FINITE_FILL, dtype=dtype))))


class InfiniteMaskFill(FiniteMaskFill):
    """Where(mask, 0, -inf) -> Where(mask, 0, FINITE_FILL), for onnxruntime's contrib attention ops.

    torch.onnx's TorchScript exporter writes scaled_dot_product_attention's boolean mask as a
    -inf bias and guards the softmax with Where(IsNaN(p), 0, p); the attention match drops the
    guard. A row whose every key is masked (a query at a left-padded position) would then be
    NaN in the fused op, and the NaN reaches every row of the next layer through its keys; with a
    finite fill it gets uniform weights. Only such rows change: the guard gave them 0.
    """

    threshold = float("-inf")


class NanGuardScalar(pattern.RewriteRuleClassBase):
    """Where(IsNaN(p), [0], p) -> Where(IsNaN(p), 0, p): the exporter writes the guard's zero as a
    one-element tensor; the attention pattern (onnxscript's SDPA) takes the scalar."""

    def pattern(self, op, probs, zero):  # type: ignore[no-untyped-def]
        return op.Where(op.IsNaN(probs), zero, probs)

    def check(self, context, probs, zero, **_):  # type: ignore[no-untyped-def]
        result = pattern.MatchResult()
        value = zero.const_value
        if value is None or value.numpy().shape != (1,) or float(value.numpy()[0]) != 0.0:
            return result.fail("the guard's value is not a one-element zero", zero)
        if probs.shape is None or len(probs.shape) < 1:
            return result.fail("the guarded value's rank is unknown", probs)
        return result

    def rewrite(self, op, probs, zero, **_):  # type: ignore[no-untyped-def]
        scalar = op.Constant(value=ir.tensor(np.array(0.0, dtype=zero.const_value.numpy().dtype)))
        return op.Where(op.IsNaN(probs), scalar, probs)


rules = pattern.RewriteRuleSet([MaskToBias.rule()])
finite_fill_rules = pattern.RewriteRuleSet([FiniteMaskFill.rule()])
exporter_mask_rules = pattern.RewriteRuleSet([InfiniteMaskFill.rule(), NanGuardScalar.rule()])

"""Boolean attention masks become additive biases, so attention fuses with its mask.

torch's ``scores.masked_fill(~mask, min)`` exports as ``Where(Not(mask), min, scores)`` and a
hand-written ``scores.masked_fill(mask == 0, float("-inf"))`` as ``Where(masked, -inf, scores)``;
the attention fusions (and onnxruntime's MultiHeadAttention ``attention_bias`` input) take an
additive bias instead: ``scores + Where(mask, 0, min)`` or ``scores + Where(masked, -inf, 0)``,
one Add for a causal and a padding mask together. The bias depends only on the mask, so
it is computed once and shared by every layer (common-subexpression elimination merges copies).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

LARGE_NEGATIVE = -1e30  # fills at or below this count as "masked out"


def _is_not(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "Not" and producer.domain in ("", "ai.onnx")


class MaskToBias(pattern.RewriteRuleClassBase):
    """Where(cond, fill, scores) -> Add(scores, bias) for a very negative constant fill.

    ``masked_fill(~keep, fill)`` exports as Where(Not(keep), fill, scores): the bias is
    Where(keep, 0, fill). ``masked_fill(masked, fill)`` (the hand-written form, a causal
    ``triu`` or ``mask == 0``) exports as Where(masked, fill, scores): the bias is
    Where(masked, fill, 0). Either way no Not is left for the attention match to walk over.
    """

    def pattern(self, op, masked_out, fill, scores):
        return op.Where(masked_out, fill, scores)

    def check(self, context, masked_out, fill, scores, **_):
        result = pattern.MatchResult()
        if masked_out.dtype is not None and masked_out.dtype != ir.DataType.BOOL:
            return result.fail("the condition is not boolean", masked_out)
        value = fill.const_value
        if value is None or value.numpy().size != 1:
            return result.fail("the fill value is not a constant scalar", fill)
        if float(value.numpy().reshape(())) > LARGE_NEGATIVE:
            return result.fail(
                f"the fill value {float(value.numpy().reshape(()))} does not mask (> {LARGE_NEGATIVE})", fill
            )
        if scores.dtype is not None and scores.dtype != ir.DataType.FLOAT:
            return result.fail("scores are not float32", scores)
        if _scalar(scores) is not None:
            return result.fail("the kept branch is a constant: this Where is a bias already", scores)
        return result

    def rewrite(self, op, masked_out, fill, scores, **_):
        zero = op.Constant(value=ir.tensor(np.array(0.0, dtype=np.float32)))
        if _is_not(masked_out):
            return op.Add(scores, op.Where(masked_out.producer().inputs[0], zero, fill))
        return op.Add(scores, op.Where(masked_out, fill, zero))


def _scalar(value: ir.Value) -> float | None:
    const = value.const_value
    if const is None or const.numpy().size != 1:
        return None
    return float(const.numpy().reshape(()))


def fill_branch(when_true: ir.Value, when_false: ir.Value) -> int | None:
    """For a bias Where(mask, a, b) with one branch the constant 0 and the other a constant: the
    index (1 or 2, as a Where input) of the fill; None when the Where is no such bias."""
    a, b = _scalar(when_true), _scalar(when_false)
    if a is None or b is None:
        return None
    if a == 0.0 and b != 0.0:
        return 2
    if b == 0.0 and a != 0.0:
        return 1
    return None


# Far enough below any attention score that fill + score rounds to fill in float32 (its spacing near
# 1e29 is about 1e22), so a row whose every key is masked softmaxes to exactly uniform weights as in
# torch, whatever the scores; -1e9 (spacing 64) let trained weights' scores of a few hundred through.
# Above LARGE_NEGATIVE, so the rule does not match its own output.
FINITE_FILL = -1e29


class FiniteMaskFill(pattern.RewriteRuleClassBase):
    """Where(mask, 0, fill) -> Where(mask, 0, FINITE_FILL) for the bias MaskToBias writes (or the same with
    the branches swapped, Where(masked, fill, 0)).

    For a query whose every key is masked (a left-padded position), torch's softmax over the fill
    gives uniform weights; onnxruntime's kernel for the standard Attention op gives another answer
    when the bias holds the lowest float. A finite fill keeps softmax's answer, so the outputs at
    padded positions stay comparable with the torch source, and masked keys still get weight 0.
    """

    def pattern(self, op, mask, when_true, when_false):
        return op.Where(mask, when_true, when_false)

    threshold = LARGE_NEGATIVE  # fills at or below this are replaced

    def check(self, context, mask, when_true, when_false, **_):
        result = pattern.MatchResult()
        side = fill_branch(when_true, when_false)
        if side is None:
            return result.fail("the Where is not a bias: one branch the constant 0, the other a constant", mask)
        fill = when_true if side == 1 else when_false
        if float(fill.const_value.numpy().reshape(())) > self.threshold:
            return result.fail("the fill is already finite", fill)
        return result

    def rewrite(self, op, mask, when_true, when_false, **_):
        side = fill_branch(when_true, when_false)
        fill = when_true if side == 1 else when_false
        finite = op.Constant(value=ir.tensor(np.array(FINITE_FILL, dtype=fill.const_value.numpy().dtype)))
        return op.Where(mask, finite, when_false) if side == 1 else op.Where(mask, when_true, finite)


class InfiniteMaskFill(FiniteMaskFill):
    """Where(mask, 0, -inf) -> Where(mask, 0, FINITE_FILL) (either branch order), for onnxruntime's
    contrib attention ops.

    torch.onnx's TorchScript exporter writes scaled_dot_product_attention's boolean mask as a
    -inf bias and guards the softmax with Where(IsNaN(p), 0, p); the attention match drops the
    guard. A hand-written ``masked_fill(mask, -inf)`` has no guard at all. A row whose every key
    is masked (a query at a left-padded position) would then be NaN in the fused op, and the NaN
    reaches every row of the next layer through its keys; with a finite fill it gets uniform
    weights. Only such rows change: the guard gave them 0 (torch without a guard, NaN).
    """

    threshold = float("-inf")


class MergeMaskBiases(pattern.RewriteRuleClassBase):
    """Add(Add(scores, bias1), bias2) -> Add(scores, bias1 + bias2) for two mask biases (a causal
    and a padding ``masked_fill`` one after the other): attention is matched with one Add of a mask."""

    def pattern(self, op, scores, first, second):
        return op.Add(op.Add(scores, first), second)

    def check(self, context, scores, first, second, **_):
        result = pattern.MatchResult()
        for bias in (first, second):
            producer = bias.producer()
            if producer is None or producer.op_type != "Where" or fill_branch(*producer.inputs[1:3]) is None:
                return result.fail("an added value is not a mask bias Where(mask, 0, fill)", bias)
        return result

    def rewrite(self, op, scores, first, second, **_):
        return op.Add(scores, op.Add(first, second))


class NanGuardScalar(pattern.RewriteRuleClassBase):
    """Where(IsNaN(p), [0], p) -> Where(IsNaN(p), 0, p): the exporter writes the guard's zero as a
    one-element tensor; the attention pattern (onnxscript's SDPA) takes the scalar."""

    def pattern(self, op, probs, zero):
        return op.Where(op.IsNaN(probs), zero, probs)

    def check(self, context, probs, zero, **_):
        result = pattern.MatchResult()
        value = zero.const_value
        if value is None or value.numpy().shape != (1,) or float(value.numpy()[0]) != 0.0:
            return result.fail("the guard's value is not a one-element zero", zero)
        if probs.shape is None or len(probs.shape) < 1:
            return result.fail("the guarded value's rank is unknown", probs)
        return result

    def rewrite(self, op, probs, zero, **_):
        scalar = op.Constant(value=ir.tensor(np.array(0.0, dtype=zero.const_value.numpy().dtype)))
        return op.Where(op.IsNaN(probs), scalar, probs)


rules = pattern.RewriteRuleSet([MaskToBias.rule()])
merge_rules = pattern.RewriteRuleSet([MergeMaskBiases.rule()])
finite_fill_rules = pattern.RewriteRuleSet([FiniteMaskFill.rule()])
exporter_mask_rules = pattern.RewriteRuleSet([InfiniteMaskFill.rule(), NanGuardScalar.rule()])

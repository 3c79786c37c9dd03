"""Boolean mask logic -> float arithmetic, for providers without Where and And (NNAPI).

The attention bias ``Where(mask, 0, fill)`` (see mask_bias.py, fill made finite) is
``(1 - float(mask)) * fill`` (``Where(masked, fill, 0)`` is ``float(masked) * fill``), and a
float of ``And(a, b)`` is ``float(a) * float(b)``; with static shapes the constant half of an
And (a causal or all-true pattern) folds away.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.rewriter import pattern

from edgeformer.fusions.mask_bias import fill_branch

FLOAT = int(ir.DataType.FLOAT)


def _scalar(value) -> float | None:
    const = value.const_value if value is not None else None
    if const is None or const.numpy().size != 1:
        return None
    return float(const.numpy().reshape(()))


class BiasFromMask(pattern.RewriteRuleClassBase):
    """Where(mask, 0, fill) -> (1 - Cast(mask, float)) * fill and Where(masked, fill, 0) ->
    Cast(masked, float) * fill, for a finite constant fill."""

    def pattern(self, op, mask, when_true, when_false):
        return op.Where(mask, when_true, when_false)

    def check(self, context, mask, when_true, when_false, **_):
        result = pattern.MatchResult()
        side = fill_branch(when_true, when_false)
        if side is None:
            return result.fail("the Where is not a bias: one branch the constant 0, the other a constant", mask)
        fill = when_true if side == 1 else when_false
        value = _scalar(fill)
        if value is None or not math.isfinite(value):
            return result.fail("the fill is not a finite constant (0 * inf would be NaN)", fill)
        if fill.const_value.dtype != ir.DataType.FLOAT:
            return result.fail("the fill is not float32", fill)
        return result

    def rewrite(self, op, mask, when_true, when_false, **_):
        if fill_branch(when_true, when_false) == 1:
            return op.Mul(op.Cast(mask, to=FLOAT), when_true)
        one = op.Constant(value=ir.tensor(np.array(1.0, dtype=np.float32)))
        return op.Mul(op.Sub(one, op.Cast(mask, to=FLOAT)), when_false)


class FloatOfAnd(pattern.RewriteRuleClassBase):
    """Cast(And(a, b), float) -> Cast(a, float) * Cast(b, float)."""

    def pattern(self, op, a, b):
        return op.Cast(op.And(a, b), _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, a, b, out, **_):
        result = pattern.MatchResult()
        to = out.producer().attributes.get("to")
        if to is None or int(to.as_int()) != FLOAT:
            return result.fail("the cast is not to float32", out)
        return result

    def rewrite(self, op, a, b, **_):
        return op.Mul(op.Cast(a, to=FLOAT), op.Cast(b, to=FLOAT))


bias_rules = pattern.RewriteRuleSet([BiasFromMask.rule()])
and_rules = pattern.RewriteRuleSet([FloatOfAnd.rule()])


def apply_to_model(model: ir.Model) -> int:
    """The bias first (it writes the Cast that the And rule then matches); the replaced Where is
    dropped in between, else it still counts as a user of the And."""
    count = bias_rules.apply_to_model(model)
    common_passes.RemoveUnusedNodesPass()(model)
    return count + and_rules.apply_to_model(model)

"""GELU -> com.microsoft FastGelu (tanh form) or Gelu (erf form), in every arrangement exporters produce.

GELU(x) ~= 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Hugging Face's GPT-2 writes it as
``(x * 0.5) * (1 + tanh(...))``; onnxscript's rule expects ``x * (0.5 * (1 + tanh(...)))``.
Both, and the product taken in either order, are alternatives of one pattern here.

GELU(x) = 0.5 x (1 + erf(x / sqrt(2))) likewise: onnxscript's erf rule (which the pipeline runs
first) takes ``0.5 * (x * (1 + erf))`` and ``x * (0.5 * (1 + erf))`` in that operand order;
torch.onnx's TorchScript exporter writes ``(x * (erf + 1)) * 0.5``.
"""

from __future__ import annotations

import math

from onnxscript.rewriter import pattern

_C = math.sqrt(2.0 / math.pi)


def _close(value, want: float, tol: float = 1e-4) -> bool:
    const = value.const_value if value is not None else None
    return const is not None and const.numpy().size == 1 and abs(float(const.numpy().reshape(())) - want) <= tol


# Where the 0.5 goes: a pattern's output cannot be a choice, so each arrangement is one rule.
ARRANGEMENTS = {
    "half_x_first": lambda op, x, one_plus, half: op.Mul(op.Mul(x, half), one_plus),  # GPT-2
    "half_inside": lambda op, x, one_plus, half: op.Mul(x, op.Mul(one_plus, half)),
    "half_last": lambda op, x, one_plus, half: op.Mul(op.Mul(x, one_plus), half),
}


class _Arranged(pattern.RewriteRuleClassBase):
    """A GELU rule for one of ARRANGEMENTS, named after its class and the arrangement."""

    def __init__(self, arrangement: str) -> None:
        super().__init__(name=f"{type(self).__name__}_{arrangement}")
        self._product = ARRANGEMENTS[arrangement]

    @staticmethod
    def _outer(one, half, result):
        if not _close(one, 1.0) or not _close(half, 0.5):
            return result.fail("the outer constants are not 1 and 0.5", half)
        return result


class TanhGelu(_Arranged):
    def pattern(self, op, x, three, k, c, one, half):
        cube = op.Mul(op.Pow(x, three), k)  # 0.044715 x^3
        inner = op.Mul(op.Add(x, cube), c)  # sqrt(2/pi) (x + ...)
        return self._product(op, x, op.Add(op.Tanh(inner), one), half)

    def check(self, context, x, three, k, c, one, half, **_):
        result = pattern.MatchResult()
        for value, want, name in ((three, 3.0, "exponent"), (k, 0.044715, "cubic coefficient"), (c, _C, "sqrt(2/pi)")):
            if not _close(value, want):
                return result.fail(f"the {name} is not the constant {want}", value)
        return self._outer(one, half, result)

    def rewrite(self, op, x, **_):
        return op.FastGelu(x, _domain="com.microsoft")


class ErfGelu(_Arranged):
    def pattern(self, op, x, root2, one, half):
        scaled = pattern.OrValue([op.Div(x, root2), op.Mul(x, root2)], tag_var="scaling", tag_values=["Div", "Mul"])
        return self._product(op, x, op.Add(op.Erf(scaled), one), half)

    def check(self, context, x, root2, one, half, scaling, **_):
        result = pattern.MatchResult()
        want = math.sqrt(2.0) if scaling == "Div" else 1.0 / math.sqrt(2.0)
        if not _close(root2, want):
            return result.fail(f"x is not {'divided' if scaling == 'Div' else 'multiplied'} by {want:.6f}", root2)
        return self._outer(one, half, result)

    def rewrite(self, op, x, **_):
        return op.Gelu(x, _domain="com.microsoft")


rules = pattern.RewriteRuleSet([TanhGelu.rule(a) for a in ARRANGEMENTS], commute=True)  # commuted operands too
erf_rules = pattern.RewriteRuleSet([ErfGelu.rule(a) for a in ARRANGEMENTS], commute=True)

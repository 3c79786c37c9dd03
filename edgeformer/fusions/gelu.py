"""tanh-approximated GELU -> com.microsoft FastGelu, in every arrangement exporters produce.

GELU(x) ~= 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Hugging Face's GPT-2 writes it as
``(x * 0.5) * (1 + tanh(...))``; onnxscript's rule expects ``x * (0.5 * (1 + tanh(...)))``.
Both, and the product taken in either order, are alternatives of one pattern here. (The erf form
is fused by onnxscript's erf rule, which the pipeline also runs.)
"""

from __future__ import annotations

import math

from onnxscript.rewriter import pattern

_C = math.sqrt(2.0 / math.pi)


def _close(value, want: float, tol: float = 1e-4) -> bool:  # type: ignore[no-untyped-def]
    const = value.const_value if value is not None else None
    return const is not None and const.numpy().size == 1 and abs(float(const.numpy().reshape(())) - want) <= tol


# Where the 0.5 goes: a pattern's output cannot be a choice, so each arrangement is one rule.
ARRANGEMENTS = {
    "half_x_first": lambda op, x, one_plus, half: op.Mul(op.Mul(x, half), one_plus),  # GPT-2
    "half_inside": lambda op, x, one_plus, half: op.Mul(x, op.Mul(one_plus, half)),
    "half_last": lambda op, x, one_plus, half: op.Mul(op.Mul(x, one_plus), half),
}


class TanhGelu(pattern.RewriteRuleClassBase):
    def __init__(self, arrangement: str) -> None:
        super().__init__(name=f"TanhGelu_{arrangement}")
        self._product = ARRANGEMENTS[arrangement]

    def pattern(self, op, x, three, k, c, one, half):  # type: ignore[no-untyped-def]
        cube = op.Mul(op.Pow(x, three), k)  # 0.044715 x^3
        inner = op.Mul(op.Add(x, cube), c)  # sqrt(2/pi) (x + ...)
        return self._product(op, x, op.Add(op.Tanh(inner), one), half)

    def check(self, context, x, three, k, c, one, half, **_):  # type: ignore[no-untyped-def]
        result = pattern.MatchResult()
        for value, want, name in ((three, 3.0, "exponent"), (k, 0.044715, "cubic coefficient"), (c, _C, "sqrt(2/pi)")):
            if not _close(value, want):
                return result.fail(f"the {name} is not the constant {want}", value)
        if not _close(one, 1.0) or not _close(half, 0.5):
            return result.fail("the outer constants are not 1 and 0.5", half)
        return result

    def rewrite(self, op, x, **_):  # type: ignore[no-untyped-def]
        return op.FastGelu(x, _domain="com.microsoft")


rules = pattern.RewriteRuleSet([TanhGelu.rule(a) for a in ARRANGEMENTS], commute=True)  # commuted operands too

"""Erf -> a polynomial in exp, for providers without Erf (NNAPI), so exact GELU stays on them.

Abramowitz & Stegun 7.1.26: for z >= 0, erf(z) = 1 - t (a1 + t (a2 + ... + t a5)) exp(-z^2),
t = 1 / (1 + p z), with an absolute error below 1.5e-7 (GELU's, 0.5 x erf, below 1e-4 of its
scale). Odd symmetry without Sign (which NNAPI lacks): with u = erf(|z|), erf(z) =
Min(u, Max(-u, 2z)), because |erf(z)| <= 2|z| / sqrt(pi) < 2|z|. Abs, Neg, Mul, Add, Div, Exp,
Min and Max are all on NNAPI's list (onnxruntime/tools/mobile_helpers/nnapi_supported_ops.md).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

P = 0.3275911
A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)  # a1 .. a5
MAX_ERROR = 1.5e-7


def _const(op, value: float):
    return op.Constant(value=ir.tensor(np.array(value, dtype=np.float32)))


class PolynomialErf(pattern.RewriteRuleClassBase):
    """Erf(z) -> Min(u, Max(-u, 2z)), u = 1 - t poly(t) exp(-z^2), t = 1 / (1 + p |z|)."""

    def pattern(self, op, z):
        return op.Erf(z)

    def check(self, context, z, **_):
        result = pattern.MatchResult()
        if z.dtype is not None and z.dtype != ir.DataType.FLOAT:
            return result.fail("the input is not float32", z)
        return result

    def rewrite(self, op, z, **_):
        one = _const(op, 1.0)
        t = op.Div(one, op.Add(one, op.Mul(op.Abs(z), _const(op, P))))
        poly = _const(op, A[-1])
        for a in reversed(A[:-1]):  # Horner: ((a5 t + a4) t + ...) t + a1
            poly = op.Add(op.Mul(poly, t), _const(op, a))
        u = op.Sub(one, op.Mul(op.Mul(t, poly), op.Exp(op.Neg(op.Mul(z, z)))))  # erf(|z|)
        return op.Min(u, op.Max(op.Neg(u), op.Mul(z, _const(op, 2.0))))


rules = pattern.RewriteRuleSet([PolynomialErf.rule()])

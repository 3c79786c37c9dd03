from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper

from edgeformer.fusions import erf_polynomial
from tests.fusions.helpers import graph, op_types, run

NNAPI_OPS = {"Abs", "Neg", "Mul", "Add", "Sub", "Div", "Exp", "Min", "Max", "Constant"}


def _erf(dtype=TensorProto.FLOAT):
    io = [helper.make_tensor_value_info(v, dtype, [64]) for v in ("z", "y")]
    return graph([helper.make_node("Erf", ["z"], ["y"])], io[:1], io[1:])


def test_erf_becomes_nnapi_ops_within_the_approximation_error():
    model = _erf()
    z = np.concatenate([np.linspace(-6, 6, 61), [0.0, 1e-8, -1e-8]]).astype(np.float32)
    assert erf_polynomial.rules.apply_to_model(model) == 1
    assert set(op_types(model)) <= NNAPI_OPS
    want = np.array([math.erf(float(v)) for v in z])
    got = run(model, {"z": z})[0]
    assert np.abs(got - want).max() < 2 * erf_polynomial.MAX_ERROR  # float32 rounding on top of 1.5e-7
    np.testing.assert_array_equal(got[:61], -got[:61][::-1])  # odd, without a Sign op
    assert got[61] == 0.0


def test_double_erf_is_left():
    model = _erf(TensorProto.DOUBLE)
    assert erf_polynomial.rules.apply_to_model(model) == 0
    assert op_types(model) == ["Erf"]

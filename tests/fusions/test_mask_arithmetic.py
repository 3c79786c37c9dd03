from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeformer.fusions import mask_arithmetic
from tests.fusions.helpers import graph, op_types, run, scalar


def _masked_bias(fill: float):
    causal = onnx.numpy_helper.from_array(np.tril(np.ones((4, 4), dtype=bool)), "causal")
    nodes = [
        helper.make_node("And", ["causal", "keep"], ["both"]),
        helper.make_node("Where", ["both", "zero", "fill"], ["bias"]),
    ]
    inputs = [helper.make_tensor_value_info("keep", TensorProto.BOOL, [1, 4])]
    outputs = [helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4, 4])]
    return graph(nodes, inputs, outputs, [causal, scalar("zero", 0.0), scalar("fill", fill)])


def test_where_and_and_become_float_arithmetic():
    model = _masked_bias(-1e9)
    keep = np.array([[True, True, False, True]])
    before = run(model, {"keep": keep})[0]
    assert mask_arithmetic.apply_to_model(model) == 2
    assert "Where" not in op_types(model) and "And" not in op_types(model)
    np.testing.assert_array_equal(run(model, {"keep": keep})[0], before)


def test_infinite_fill_is_left():
    model = _masked_bias(-np.inf)  # (1 - 1) * -inf would be NaN
    assert mask_arithmetic.apply_to_model(model) == 0
    assert "Where" in op_types(model)


def test_a_bias_with_the_fill_first_becomes_float_arithmetic():
    """A hand-written masked_fill(masked, fill) gives Where(masked, fill, 0) (see mask_bias.MaskToBias)."""
    nodes = [helper.make_node("Where", ["masked", "fill", "zero"], ["bias"])]
    inputs = [helper.make_tensor_value_info("masked", TensorProto.BOOL, [2, 4])]
    outputs = [helper.make_tensor_value_info("bias", TensorProto.FLOAT, [2, 4])]
    model = graph(nodes, inputs, outputs, [scalar("zero", 0.0), scalar("fill", -1e9)])
    masked = np.array([[True, False, False, True], [False, False, True, False]])
    before = run(model, {"masked": masked})[0]
    assert mask_arithmetic.apply_to_model(model) == 1
    assert "Where" not in op_types(model)
    np.testing.assert_array_equal(run(model, {"masked": masked})[0], before)

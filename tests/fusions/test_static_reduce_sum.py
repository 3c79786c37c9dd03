from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeformer.fusions import static_reduce_sum
from tests.fusions.helpers import graph, op_types, run


def _reduce_sum(shape):
    axes = onnx.numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    return graph([node], inputs, outputs, [axes])


def test_sum_over_a_fixed_axis_becomes_mean_times_count():
    model = _reduce_sum([2, 16, 8])
    x = np.random.default_rng(0).standard_normal((2, 16, 8)).astype(np.float32)
    before = run(model, {"x": x})[0]
    assert static_reduce_sum.rules.apply_to_model(model) == 1
    assert "ReduceSum" not in op_types(model) and "ReduceMean" in op_types(model)
    np.testing.assert_allclose(run(model, {"x": x})[0], before, rtol=1e-5, atol=1e-5)


def test_dynamic_axis_is_left():
    model = _reduce_sum([2, "sequence", 8])
    assert static_reduce_sum.rules.apply_to_model(model) == 0

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeformer.fusions import layer_norm_decomposed
from tests.fusions.helpers import graph, op_types, run


def _layer_norm(axis: int = -1):
    rng = np.random.default_rng(0)
    consts = [
        onnx.numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "scale"),
        onnx.numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
    ]
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=axis, epsilon=1e-12)
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 3, 8]) for v in ("x", "y")]
    return graph([node], io[:1], io[1:], consts)


def test_layer_norm_becomes_ops_on_nnapis_list():
    model = _layer_norm()
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32) * 5
    before = run(model, {"x": x})[0]
    assert layer_norm_decomposed.rules.apply_to_model(model) == 1
    ops = set(op_types(model))
    assert "LayerNormalization" not in ops
    assert ops <= {"ReduceMean", "Sub", "Mul", "Add", "Sqrt", "Div", "Constant"}
    np.testing.assert_allclose(run(model, {"x": x})[0], before, atol=1e-5)


def test_norm_over_another_axis_is_left():
    model = _layer_norm(axis=1)
    assert layer_norm_decomposed.rules.apply_to_model(model) == 0
    assert op_types(model) == ["LayerNormalization"]

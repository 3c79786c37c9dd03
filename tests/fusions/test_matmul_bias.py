"""bias_after_matmul: Add(bias, MatMul(x, W)) -> Add(MatMul(x, W), bias), same numbers."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions.matmul_bias import bias_after_matmul
from tests.fusions.helpers import graph, run

RNG = np.random.default_rng(0)
W = numpy_helper.from_array(RNG.standard_normal((8, 6)).astype(np.float32), "W")
B = numpy_helper.from_array(RNG.standard_normal(6).astype(np.float32), "B")
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


def _model(first: str, second: str):  # noqa: ANN202
    nodes = [helper.make_node("MatMul", ["x", "W"], ["p"]), helper.make_node("Add", [first, second], ["y"])]
    return graph(nodes, [X], [Y], [W, B])


def test_bias_first_is_moved_after_the_product_with_the_same_numbers() -> None:
    model = _model("B", "p")
    feeds = {"x": RNG.standard_normal((2, 5, 8)).astype(np.float32)}
    before = run(model, feeds)[0]
    assert bias_after_matmul(model) == 1
    add = next(n for n in model.graph if n.op_type == "Add")
    assert [v.name for v in add.inputs] == ["p", "B"]
    assert add.inputs[0].producer().op_type == "MatMul"
    np.testing.assert_array_equal(run(model, feeds)[0], before)


def test_already_in_order_and_non_product_adds_are_left_alone() -> None:
    assert bias_after_matmul(_model("p", "B")) == 0
    # Add(constant, x): the other operand is not a MatMul
    nodes = [helper.make_node("Add", ["B", "x"], ["y"])]
    assert bias_after_matmul(graph(nodes, [X], [Y], [B])) == 0
    # Add(MatMul, MatMul): neither side is a constant bias
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["p"]),
        helper.make_node("MatMul", ["x", "W"], ["q"]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    model = graph(nodes, [X], [Y], [W])
    assert bias_after_matmul(model) == 0
    assert [v.name for v in next(n for n in model.graph if n.op_type == "Add").inputs] == ["p", "q"]

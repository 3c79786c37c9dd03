from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions.packed_weights import fold_packed_weights
from tests.fusions.helpers import graph, op_types, run


def _model(shared: bool):
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), f"w{i}") for i in range(3)]
    nodes = [
        helper.make_node("Concat", ["w0", "w1", "w2"], ["packed"], axis=1),
        helper.make_node("MatMul", ["x", "packed"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 9])]
    if shared:  # w0 also feeds another op: folding would duplicate it
        nodes.append(helper.make_node("MatMul", ["x", "w0"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]
    return graph(nodes, inputs, outputs, weights)


def test_a_concat_of_initializers_becomes_one_initializer():
    model = _model(shared=False)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)}
    before = run(model, feeds)
    assert fold_packed_weights(model) == 1
    assert op_types(model) == ["MatMul"]
    assert [tuple(v.shape) for v in model.graph.initializers.values()] == [(4, 9)]
    np.testing.assert_array_equal(run(model, feeds)[0], before[0])


def test_a_part_used_elsewhere_is_not_duplicated():
    model = _model(shared=True)
    assert fold_packed_weights(model) == 0 and "Concat" in op_types(model)

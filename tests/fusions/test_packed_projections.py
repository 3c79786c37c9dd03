from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions.packed_projections import pack_projections
from tests.fusions.helpers import graph, op_types, run

SIZES = (4, 4, 6)


def _model(bias: bool = True, shared: bool = False, count: int = 3):
    rng = np.random.default_rng(0)
    inits, nodes, outputs = [], [], []
    for i in range(count):
        inits.append(numpy_helper.from_array(rng.standard_normal((5, SIZES[i])).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"], name=f"proj{i}"))
        out = f"m{i}"
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(SIZES[i]).astype(np.float32), f"b{i}"))
            nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"]))
            out = f"y{i}"
        nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))  # a consumer of each projection
        outputs.append(helper.make_tensor_value_info(f"r{i}", TensorProto.FLOAT, [2, 3, SIZES[i]]))
    if shared:  # w0 also feeds another MatMul of another input: it must stay where it is
        nodes.append(helper.make_node("MatMul", ["z", "w0"], ["s"]))
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, SIZES[0]]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5])]
    if shared:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 5]))
    return graph(nodes, inputs, outputs, inits)


def _feeds(shared: bool = False):
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, 3, 5)).astype(np.float32)}
    if shared:
        feeds["z"] = rng.standard_normal((2, 5)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("bias", [True, False])
def test_projections_of_one_input_become_one_matmul(bias):
    model = _model(bias=bias)
    before = run(model, _feeds())
    assert pack_projections(model) == 1
    ops = op_types(model)
    assert ops.count("MatMul") == 1 and ops.count("Split") == 1 and ops.count("Add") == (1 if bias else 0)
    assert [tuple(v.shape) for v in model.graph.initializers.values() if len(v.shape) == 2] == [(5, sum(SIZES))]
    for got, want in zip(run(model, _feeds()), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_projection_that_is_a_graph_output_keeps_its_name():
    model = _model(bias=False)
    m0 = next(v for n in model.graph for v in n.outputs if v.name == "m0")
    model.graph.outputs.append(m0)
    before = run(model, _feeds())
    assert pack_projections(model) == 1
    assert [v.name for v in model.graph.outputs] == ["r0", "r1", "r2", "m0"]
    assert model.graph.outputs[-1].producer().op_type == "Split"
    for got, want in zip(run(model, _feeds()), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_bias_shared_by_the_projections_is_packed_too():
    """Cleanup merges equal initializers (all-zero biases of a fresh model): one bias, three uses."""
    model = _model(bias=True, count=2)  # SIZES 4 and 4: one bias can serve both
    b0 = model.graph.initializers["b0"]
    add1 = next(n for n in model.graph if n.op_type == "Add" and n.inputs[1].name == "b1")
    add1.replace_input_with(1, b0)
    model.graph.initializers.pop("b1")
    before = run(model, _feeds())
    assert pack_projections(model) == 1
    ops = op_types(model)
    assert ops.count("MatMul") == 1 and ops.count("Add") == 1 and "b0" not in model.graph.initializers
    for got, want in zip(run(model, _feeds()), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_weight_used_elsewhere_is_not_packed():
    model = _model(shared=True)
    before = run(model, _feeds(shared=True))
    assert pack_projections(model) == 1  # proj1 and proj2 still pack; proj0's weight stays for "s"
    assert op_types(model).count("MatMul") == 3
    for got, want in zip(run(model, _feeds(shared=True)), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_single_projection_is_left_alone():
    assert pack_projections(_model(count=1)) == 0

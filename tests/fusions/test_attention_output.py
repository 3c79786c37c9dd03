"""attention_output: a fused SDPA whose output is flattened to 2-D in one Reshape is split into
(B, S, D) then the requested shape; the other forms are left alone and say why."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions import attention_output
from tests.fusions.helpers import graph, op_types, run

DOMAIN = attention_output.FUSION_DOMAIN
B, H, S, DH = 2, 3, 5, 4


def _model(flat_shape: list[int], producer_domain: str = DOMAIN) -> ir.Model:
    """q -> SDPA (fusion domain) -> Transpose(0,2,1,3) -> Reshape(flat_shape) -> y."""
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, H, S, DH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, flat_shape)
    shape = numpy_helper.from_array(np.array(flat_shape, dtype=np.int64), "shape")
    nodes = [
        helper.make_node("SDPA", ["q"], ["attn"], domain=producer_domain),
        helper.make_node("Transpose", ["attn"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["t", "shape"], ["flat"]),
        helper.make_node("Identity", ["flat"], ["y"]),
    ]
    model = graph(nodes, [q], [y], [shape])
    model.opset_imports[DOMAIN] = 1
    for node in model.graph:
        if node.op_type == "SDPA":
            node.outputs[0].shape = ir.Shape([B, H, S, DH])
            node.outputs[0].dtype = ir.DataType.FLOAT
        if node.op_type == "Reshape":
            node.outputs[0].shape = ir.Shape(flat_shape)
    return model


def _runnable(model: ir.Model) -> ir.Model:
    """The same graph with the (unrunnable) SDPA stand-in made an Identity, to compare numbers."""
    proto = ir.to_proto(model)
    for node in proto.graph.node:
        if node.op_type == "SDPA":
            node.op_type, node.domain = "Identity", ""
    return ir.from_proto(proto)


def test_flattened_output_is_split_into_bsd_then_the_asked_shape_with_the_same_numbers() -> None:
    model = _model([B * S, H * DH])
    feeds = {"q": np.random.default_rng(0).standard_normal((B, H, S, DH)).astype(np.float32)}
    before = run(_runnable(model), feeds)[0]
    assert attention_output.rules.apply_to_model(model) == 1
    assert op_types(model).count("Reshape") == 2
    first = next(n for n in model.graph if n.op_type == "Reshape")
    assert first.inputs[1].const_value is not None or first.inputs[1].producer().op_type == "Constant"
    after = run(_runnable(model), feeds)[0]
    assert after.shape == (B * S, H * DH)
    np.testing.assert_array_equal(after, before)


def test_three_d_output_and_other_producers_are_not_rewritten() -> None:
    assert attention_output.rules.apply_to_model(_model([B, S, H * DH])) == 0
    assert attention_output.rules.apply_to_model(_model([B * S, H * DH], producer_domain="other.domain")) == 0

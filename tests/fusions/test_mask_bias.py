from __future__ import annotations

import numpy as np
import onnx_ir.passes.common as common_passes
import pytest
from onnx import TensorProto, helper

from edgeformer.fusions import mask_bias
from tests.fusions.helpers import graph, op_types, run, scalar


def _masked_softmax(fill: float):
    nodes = [
        helper.make_node("Not", ["mask"], ["masked_out"]),
        helper.make_node("Where", ["masked_out", "fill", "scores"], ["masked"]),
        helper.make_node("Where", ["masked_out", "fill", "scores2"], ["masked2"]),  # a second layer shares Not
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("Softmax", ["masked2"], ["p2"], axis=-1),
    ]
    shape = [2, 3, 5]
    inputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, shape),
        helper.make_tensor_value_info("scores2", TensorProto.FLOAT, shape),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, shape),
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("p", "p2")]
    return graph(nodes, inputs, outputs, [scalar("fill", fill)])


def _feeds():
    rng = np.random.default_rng(0)
    mask = rng.random((2, 3, 5)) > 0.3
    mask[0, 0] = False  # a fully masked row stays finite
    return {
        "scores": rng.standard_normal((2, 3, 5)).astype(np.float32),
        "scores2": rng.standard_normal((2, 3, 5)).astype(np.float32),
        "mask": mask,
    }


def test_boolean_mask_becomes_additive_bias():
    model = _masked_softmax(float(np.finfo(np.float32).min))
    feeds = _feeds()
    before = run(model, feeds)
    assert mask_bias.rules.apply_to_model(model) == 2
    common_passes.RemoveUnusedNodesPass()(model)  # the shared Not has no users left
    ops = op_types(model)
    assert "Not" not in ops and ops.count("Add") == 2 and ops.count("Where") == 2
    after = run(model, feeds)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert np.isfinite(b).all()


def test_a_fill_that_does_not_mask_is_left_alone():
    model = _masked_softmax(-1.0)
    assert mask_bias.rules.apply_to_model(model) == 0
    assert "Not" in op_types(model)


@pytest.mark.parametrize("fill", [-1e31, float(np.finfo(np.float32).min)])
def test_large_negative_fills_count_as_masks(fill):
    assert mask_bias.rules.apply_to_model(_masked_softmax(fill)) == 2

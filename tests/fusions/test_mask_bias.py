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


def _hand_written_masks():
    """scores.masked_fill(future, -inf).masked_fill(padded, -inf).softmax(-1), as torch exports it:
    Where(padded, -inf, Where(future, -inf, scores)), no Not and no NaN guard."""
    nodes = [
        helper.make_node("Where", ["future", "fill", "scores"], ["causal"]),
        helper.make_node("Where", ["padded", "fill", "causal"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
    ]
    inputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 4, 4]),
        helper.make_tensor_value_info("future", TensorProto.BOOL, [4, 4]),
        helper.make_tensor_value_info("padded", TensorProto.BOOL, [2, 1, 4]),
    ]
    outputs = [helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 4, 4])]
    return graph(nodes, inputs, outputs, [scalar("fill", float("-inf"))])


def _hand_feeds():
    padded = np.zeros((2, 1, 4), dtype=bool)
    padded[1, 0, :2] = True  # left padding: row 0 of the second item sees no key at all
    return {
        "scores": np.random.default_rng(0).standard_normal((2, 4, 4)).astype(np.float32),
        "future": np.triu(np.ones((4, 4), dtype=bool), 1),
        "padded": padded,
    }


def test_hand_written_masked_fill_becomes_one_bias_and_a_fully_masked_row_stays_finite():
    model, feeds = _hand_written_masks(), _hand_feeds()
    before = run(model, feeds)[0]
    assert np.isnan(before[1, 0]).all()  # torch's answer too: softmax over nothing but -inf
    assert mask_bias.rules.apply_to_model(model) == 2
    assert mask_bias.merge_rules.apply_to_model(model) == 1
    common_passes.RemoveUnusedNodesPass()(model)
    softmax = next(n for n in model.graph if n.op_type == "Softmax")
    add = softmax.inputs[0].producer()
    assert add.op_type == "Add" and add.inputs[0].name == "scores"  # one Add of one (merged) bias
    assert add.inputs[1].producer().op_type == "Add"
    after = run(model, feeds)[0]
    real = ~np.isnan(before)
    np.testing.assert_allclose(after[real], before[real], atol=1e-6)
    assert mask_bias.exporter_mask_rules.apply_to_model(model) == 2  # -inf -> -1e9 in both biases
    finite = run(model, feeds)[0]
    assert np.isfinite(finite).all()
    np.testing.assert_allclose(finite.sum(axis=-1), 1.0, atol=1e-6)  # weights, also in the fully masked row
    np.testing.assert_allclose(finite[real], before[real], atol=1e-6)


def test_a_bias_is_not_taken_for_scores():
    """MaskToBias writes Where(masked, fill, 0): run again, it must not wrap its own bias."""
    model = _hand_written_masks()
    assert mask_bias.rules.apply_to_model(model) == 2
    assert mask_bias.rules.apply_to_model(model) == 0

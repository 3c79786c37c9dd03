"""Attention lowered to the standard opset-23 Attention op: op types after fusion and the numbers
under onnxruntime, for self-attention with a per-query mask and cross-attention with a (B,1,1,T) one."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgeformer.fusions import mask_bias, pipeline
from tests.fusions.helpers import graph, op_types, run

B, H, D = 2, 4, 8


def _attention(q_len, kv_len, mask_rows, opset=23):
    """softmax(Q K^T / sqrt(D) + bias) V in (B, H, S, D), the bias built from a boolean mask the
    way the exporter writes it (Where(Not(mask), lowest, scores))."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Div", ["qk", "sqrt_d"], ["scores"]),
        helper.make_node("Not", ["mask"], ["masked_out"]),
        helper.make_node("Where", ["masked_out", "lowest", "scores"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, H, q_len, D]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT, [B, H, kv_len, D]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, [B, H, kv_len, D]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, [B, 1, mask_rows, kv_len]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, H, q_len, D])]
    consts = [
        helper.make_tensor("sqrt_d", TensorProto.FLOAT, [], [float(np.sqrt(D))]),
        helper.make_tensor("lowest", TensorProto.FLOAT, [], [float(np.finfo(np.float32).min)]),
    ]
    return graph(nodes, inputs, outputs, consts, opset=opset)


def _feeds(q_len, kv_len, mask_rows):
    rng = np.random.default_rng(0)
    mask = rng.random((B, 1, mask_rows, kv_len)) > 0.3
    mask[..., 0] = True
    mask[1, 0, 0, :] = False  # one query sees no key at all (a left-padded position)
    return {
        "q": rng.standard_normal((B, H, q_len, D)).astype(np.float32),
        "k": rng.standard_normal((B, H, kv_len, D)).astype(np.float32),
        "v": rng.standard_normal((B, H, kv_len, D)).astype(np.float32),
        "mask": mask,
    }


@pytest.mark.parametrize(("q_len", "kv_len", "mask_rows"), [(5, 5, 5), (3, 7, 3), (4, 6, 1), (1, 9, 1)])
def test_attention_becomes_the_standard_op(q_len, kv_len, mask_rows):
    model = _attention(q_len, kv_len, mask_rows)
    feeds = _feeds(q_len, kv_len, mask_rows)
    (before,) = run(model, feeds)
    report = pipeline.fuse_model(model, "standard", feeds=[feeds], strict=True)
    ops = op_types(model)
    assert ops.count("Attention") == 1 and "Softmax" not in ops, ops
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.all_nodes())
    assert report.complete and report.coverage["attention"] == {"blocks": 1, "fused": 1}
    (after,) = run(model, feeds)
    np.testing.assert_allclose(after, before, atol=1e-5)  # the fully masked row included


def test_below_opset_23_attention_is_reported_with_the_reason():
    model = _attention(5, 5, 5, opset=18)
    report = pipeline.fuse_model(model, "standard", feeds=[_feeds(5, 5, 5)])
    assert "Attention" not in op_types(model)
    (item,) = report.not_fused
    assert item["kind"] == "attention" and "needs opset 23" in item["reason"], item


def test_the_finite_fill_keeps_softmax_answers():
    model = _attention(5, 5, 5)
    feeds = _feeds(5, 5, 5)
    (before,) = run(model, feeds)
    assert mask_bias.rules.apply_to_model(model) == 1
    assert mask_bias.finite_fill_rules.apply_to_model(model) == 1
    assert mask_bias.finite_fill_rules.apply_to_model(model) == 0  # already finite
    (after,) = run(model, feeds)
    np.testing.assert_allclose(after, before, atol=1e-6)


@pytest.mark.parametrize("score_scale", [1.0, 30.0])
def test_a_fully_masked_row_stays_uniform_when_scores_are_large(score_scale):
    """Trained weights give scores of a few hundred; -1e9 + score keeps their differences in float32
    (spacing 64 there), so a fully masked row (a left-padded query) was no longer uniform as in torch."""
    model = _attention(9, 9, 9)
    feeds = _feeds(9, 9, 9)
    feeds["q"] *= np.float32(score_scale)
    feeds["k"] *= np.float32(score_scale)
    (before,) = run(model, feeds)
    pipeline.fuse_model(model, "standard", feeds=None)
    assert "Attention" in op_types(model)
    (after,) = run(model, feeds)
    np.testing.assert_allclose(after[1, :, 0], feeds["v"][1].mean(axis=1), atol=1e-4)  # uniform over all keys
    np.testing.assert_allclose(after, before, atol=1e-4)

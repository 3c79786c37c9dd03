from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions.mha_bnsh_cache import rules
from tests.fusions.helpers import graph, op_types, run

B, S, L, N, H = 2, 3, 5, 4, 8


def _model(inputs_after_mask: int = 0, heads: int = N, flat=(0, 0, -1)):
    nodes = [
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["kt", "flat"], ["k"]),
        helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["vt", "flat"], ["v"]),
        helper.make_node(
            "MultiHeadAttention",
            ["q", "k", "v", "", "", "bias", *[""] * inputs_after_mask],
            ["y"],
            domain="com.microsoft",
            num_heads=heads,
        ),
    ]
    inputs = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, S, N * H]),
        helper.make_tensor_value_info("k4", TensorProto.FLOAT, [B, N, L, H]),
        helper.make_tensor_value_info("v4", TensorProto.FLOAT, [B, N, L, H]),
        helper.make_tensor_value_info("bias", TensorProto.FLOAT, [B, 1, S, L]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, N * H])]
    flat_init = numpy_helper.from_array(np.array(flat, dtype=np.int64), "flat")
    return graph(nodes, inputs, outputs, [flat_init])


def _feeds():
    rng = np.random.default_rng(0)
    bias = np.where(rng.random((B, 1, S, L)) < 0.3, -1e4, 0.0).astype(np.float32)
    return {
        "q": rng.standard_normal((B, S, N * H), dtype=np.float32),
        "k4": rng.standard_normal((B, N, L, H), dtype=np.float32),
        "v4": rng.standard_normal((B, N, L, H), dtype=np.float32),
        "bias": bias,
    }


@pytest.mark.parametrize("trailing", [0, 2])  # the fusion leaves empty past inputs until cleanup
def test_attention_reads_the_cache_in_heads_layout(trailing):
    model = _model(trailing)
    before = run(model, _feeds())
    assert rules.apply_to_model(model) == 1
    assert op_types(model) == ["MultiHeadAttention"]
    np.testing.assert_allclose(run(model, _feeds())[0], before[0], rtol=1e-5, atol=1e-6)


def test_a_cache_whose_axis_1_is_not_the_heads_is_left_alone():
    assert rules.apply_to_model(_model(heads=2)) == 0


def test_a_reshape_that_does_not_merge_the_last_axes_is_left_alone():
    assert rules.apply_to_model(_model(flat=(0, -1, N * H))) == 0

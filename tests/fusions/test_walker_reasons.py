"""The hand-written walkers say why they left each candidate: per walker, a graph with one candidate
it rewrites and one it cannot, and the reason the second one gets; then the fusion report's list."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions import symbolic_shapes
from edgeformer.fusions.matmul_bias import bias_after_matmul
from edgeformer.fusions.packed_projections import pack_projections
from edgeformer.fusions.packed_weights import fold_packed_weights
from edgeformer.fusions.pipeline import fuse_model
from edgeformer.fusions.split_skip_norm import split_skip_layer_norm
from tests.fusions.helpers import graph

RNG = np.random.default_rng(0)


def _init(name: str, *shape: int) -> object:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _value(name: str, shape: list | None) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_bias_after_matmul_names_the_operand_that_is_no_product() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["p"]),
        helper.make_node("Add", ["B", "p"], ["y"], name="fusable"),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Add", ["C", "r"], ["z"], name="after_relu"),
    ]
    model = graph(nodes, [_value("x", [2, 4])], [_value("y", None), _value("z", None)], [
        _init("W", 4, 4), _init("B", 4), _init("C", 4)
    ])  # fmt: skip
    skipped: list[dict[str, str]] = []
    assert bias_after_matmul(model, skipped) == 1
    assert skipped == [{"node": "after_relu", "reason": "its other operand comes from Relu, not a MatMul"}]


def test_packed_weights_names_the_part_read_elsewhere() -> None:
    nodes = [
        helper.make_node("Concat", ["w0", "w1"], ["packed"], axis=1, name="fusable"),
        helper.make_node("MatMul", ["x", "packed"], ["y"]),
        helper.make_node("Concat", ["w2", "w3"], ["shared"], axis=1, name="shared_part"),
        helper.make_node("MatMul", ["x", "shared"], ["z"]),
        helper.make_node("MatMul", ["x", "w2"], ["u"]),
    ]
    outputs = [_value("y", None), _value("z", None), _value("u", None)]
    model = graph(nodes, [_value("x", [2, 4])], outputs, [_init(f"w{i}", 4, 3) for i in range(4)])
    skipped: list[dict[str, str]] = []
    assert fold_packed_weights(model, skipped) == 1
    assert skipped == [{"node": "shared_part", "reason": "initializer w2 is also read by 1 other node(s)"}]


def test_packed_projections_names_the_weight_that_is_computed() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
        helper.make_node("Relu", ["wv"], ["wv_relu"]),
        helper.make_node("MatMul", ["x", "wv_relu"], ["v"], name="v_of_relu"),
    ]
    outputs = [_value(n, None) for n in ("q", "k", "v")]
    model = graph(nodes, [_value("x", [2, 4])], outputs, [_init(n, 4, 3) for n in ("wq", "wk", "wv")])
    skipped: list[dict[str, str]] = []
    assert pack_projections(model, skipped) == 1  # q and k packed
    assert skipped == [{"node": "v_of_relu", "reason": "its weight comes from Relu, not an initializer"}]


def test_split_skip_norm_names_the_used_mean_output() -> None:
    def sln(name: str, x: str, outputs: list[str]) -> object:
        return helper.make_node(
            "SkipLayerNormalization", [x, "s", "g", "b"], outputs, domain="com.microsoft", name=name
        )

    nodes = [sln("fusable", "x", ["y"]), sln("mean_used", "y", ["z", "mean"])]
    h = [_value(n, [2, 3, 4]) for n in ("x", "s")]
    model = graph(nodes, h, [_value("z", None), _value("mean", None)], [_init("g", 4), _init("b", 4)])
    skipped: list[dict[str, str]] = []
    assert split_skip_layer_norm(model, skipped) == 1
    assert skipped == [
        {
            "node": "mean_used",
            "reason": "its mean or inverse-std output is used (LayerNormalization here gives neither)",
        }
    ]


def test_symbolic_shapes_names_the_dimension_no_input_has() -> None:
    """Gather(Shape(x), 0) reads x's batch (rewritten to a constant once inferred); the second reads a
    dimension that comes from a NonZero count, which no graph input has; the Reshape changes the shape."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Shape", ["h"], ["hs"]),
        helper.make_node("Gather", ["hs", "i2"], ["width"], axis=0, name="fusable"),
        helper.make_node("NonZero", ["h"], ["nz"]),
        helper.make_node("Shape", ["nz"], ["nzs"]),
        helper.make_node("Gather", ["nzs", "i1"], ["count"], axis=0, name="data_dependent"),
        helper.make_node("Unsqueeze", ["width", "axes0"], ["w1"]),
        helper.make_node("Unsqueeze", ["count", "axes0"], ["c1"]),
        helper.make_node("Concat", ["c1", "w1"], ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["flat"], name="flatten"),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    inits = [
        _init("W", 4, 4),
        numpy_helper.from_array(np.array(2, dtype=np.int64), "i2"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "i1"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
    ]
    model = graph(nodes, [_value("x", ["batch", "seq", 4])], [_value("y", None)], inits)
    skipped: list[dict[str, str]] = []
    assert symbolic_shapes.apply(model, skipped) >= 1
    by_node = {s["node"]: s["reason"] for s in skipped}
    assert by_node["data_dependent"].startswith("dimension ") and by_node["data_dependent"].endswith(
        "of nz is no graph input's dimension"
    )
    assert by_node["flatten"] == "it changes the rank (3 -> 2)"
    assert "fusable" not in by_node


def test_the_fusion_report_lists_each_walkers_skips_per_pass() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["C", "r"], ["y"], name="after_relu")]
    model = graph(nodes, [_value("x", [2, 4])], [_value("y", None)], [_init("C", 4)])
    report = fuse_model(model, "contrib", debug=True)
    want = {"node": "after_relu", "reason": "its other operand comes from Relu, not a MatMul"}
    assert report.to_dict()["skipped"]["bias_after_matmul"] == {"count": 1, "candidates": [want]}
    assert "[bias_after_matmul] after_relu: its other operand comes from Relu, not a MatMul" in report.debug

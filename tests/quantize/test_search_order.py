"""The precision search's order and its bisection: nodes are kept in float by budget bought back per float
weight (a big node in float is read at full width at every decoding step), and the bisection leaves the
graph it chose as the last one judged, reporting each confirmation."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeformer.quantize import budget as budgets
from edgeformer.quantize.mixed import _smallest_meeting, float_order, quantize_within_budget, weight_params


def test_a_big_node_is_kept_in_float_only_when_it_buys_more_budget_per_weight():
    params = {"head": 1_000_000, "small_a": 10_000, "small_b": 10_000, "quiet": 10_000}
    sensitivity = {"head": 0.9, "small_a": 0.5, "small_b": 0.2, "quiet": 0.0}
    # by sensitivity alone the head came first; per float weight it costs 100x a small node
    assert float_order(list(params), sensitivity, params) == ["small_a", "small_b", "head", "quiet"]
    assert float_order(list(params), sensitivity | {"head": 90.0}, params)[0] == "head"


def test_the_bisection_finds_the_smallest_meeting_count_and_ends_on_it():
    calls = []

    def meets(k: int, width: int) -> bool:
        calls.append(k)
        return k >= 5

    assert _smallest_meeting(meets, 12) == 5 and calls[0] == 12 and calls[-1] == 5
    calls.clear()
    assert _smallest_meeting(lambda k, w: calls.append(k) or False, 7) == 7 and calls == [7]


def _two_matmuls(tmp_path):
    rng = np.random.default_rng(0)
    big, small = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal((64, 8)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "big"], ["h"], name="big"),
            helper.make_node("MatMul", ["h", "small"], ["y"], name="small"),
        ],  # fmt: skip
        "g",
        [x],
        [y],
        [numpy_helper.from_array(big, "big"), numpy_helper.from_array(small, "small")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_search_reports_each_confirmation_and_its_time(tmp_path):
    model = _two_matmuls(tmp_path)
    assert weight_params(model, ["big", "small"]) == {"big": 4096, "small": 512}

    def quantize(m, out, exclude=()):  # "reduced precision": weights rounded to one decimal, except `exclude`
        copy = onnx.ModelProto()
        copy.CopyFrom(m)
        for init in copy.graph.initializer:
            if init.name not in exclude:
                init.CopyFrom(numpy_helper.from_array(np.round(numpy_helper.to_array(init), 0), init.name))
        onnx.save(copy, out)
        return out

    feeds = [{"x": np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)}]
    lines = []
    result = quantize_within_budget(
        model, tmp_path / "q.onnx", quantize, feeds, {"cosine": 0.9999}, candidates=["big", "small"], log=lines.append
    )
    confirmations = [line for line in lines if "confirmation" in line]
    assert confirmations and confirmations[0].startswith("    confirmation 1: 2/2 node(s) in float"), lines
    assert "MB of float weights" in confirmations[0] and "s each, at most" in confirmations[0]
    assert any(line.startswith("  search: ") and line.endswith("s in all") for line in lines), lines
    assert result.within_budget and not budgets.violations(result.measured, {"cosine": 0.9999})

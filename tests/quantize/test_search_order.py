"""The precision search's order and its bisection: nodes are kept in float by budget bought back per float
weight (a big node in float is read at full width at every decoding step), and the bisection leaves the
graph it chose as the last one judged, reporting each confirmation."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeformer import budget as budgets
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

    # k doubles from 1 until it meets, then bisects: few nodes usually hold the loss
    assert _smallest_meeting(meets, 12) == 5 and calls == [1, 2, 4, 8, 6, 5]
    calls.clear()
    assert _smallest_meeting(lambda k, w: calls.append(k) or False, 7) == 7 and calls == [1, 2, 4, 7]


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
    assert confirmations and confirmations[0].startswith("    confirmation 1: 1/2 node(s) in float"), lines
    assert "MB of float weights" in confirmations[0] and "s so far, at most" in confirmations[0]
    assert any(line.startswith("  search: ") and line.endswith("s in all") for line in lines), lines
    assert result.within_budget and not budgets.violations(result.measured, {"cosine": 0.9999})


def test_dynamic_int8_ranks_every_node_from_one_gated_session_that_is_the_written_graph(edge_bundle, tmp_path):
    """int8 used to quantize, write and load the whole model once per node to score it; now one gated
    session scores them all (one run per node on one batch, and one run, every gate closed, for the floor
    and every node's local error), and the same session, gates set, gives the graph written with those
    nodes kept in float, as the budget sees it."""
    from edgeformer.quantize import int8, sensitivity, tied_head
    from edgeformer.quantize.mixed import _session, outputs_of
    from edgeformer.quantize.passes import dynamic_int8

    model, heads = tied_head.untie(int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx"))))
    shared = {g for head in heads for g in head.gathers}
    candidates = [c for c in int8.quantizable_nodes(model) if c not in shared]
    rows = np.random.default_rng(0).integers(0, 500, (2, 16))
    feeds = [{"input_ids": rows, "attention_mask": np.ones_like(rows), "position_ids": np.tile(np.arange(16), (2, 1))}]
    feeds[0] |= {i.name: np.zeros((2, 8, 0, 16), np.float32) for i in model.graph.input if i.name.startswith("past")}
    quantize = dynamic_int8(heads, [])
    quantize(model, tmp_path / "all.onnx")
    onnx.save(model, tmp_path / "float.onnx")
    reference = outputs_of(_session(tmp_path / "float.onnx"), feeds)

    def judge(got):
        return 1 - budgets.measure(reference, got, feeds)["cosine"]

    ranking = sensitivity.rank(model, tmp_path / "all.onnx", candidates, feeds, judge)
    assert ranking.key == "budget_used_alone" and ranking.runs == 1 + len(candidates)
    assert set(ranking.scores) == set(ranking.local) == set(candidates)
    assert all(0 < e < 0.2 for e in ranking.local.values()), ranking.local  # int8's relative error per node
    name = max(ranking.scores, key=ranking.scores.get)  # the graph written with only this node in int8 agrees
    quantize(model, tmp_path / "one.onnx", exclude=[c for c in candidates if c != name])
    alone = judge(outputs_of(_session(tmp_path / "one.onnx"), feeds))
    assert abs(ranking.scores[name] - alone) <= 0.15 * alone + 1e-7, (name, ranking.scores[name], alone)
    from edgeformer.quantize.mixed import shared_weights

    head = shared_weights(model, candidates)  # the tied head: kept in float, its embedding is float too
    assert len(head) == 1 and next(iter(head)) in candidates and not head & shared
    kept = sorted(set(candidates) - head, key=ranking.scores.get)[-3:]
    quantize(model, tmp_path / "mixed.onnx", exclude=kept)
    written = budgets.measure(reference, outputs_of(_session(tmp_path / "mixed.onnx"), feeds), feeds)["cosine"]
    gated = budgets.measure(reference, outputs_of(ranking.confirm.with_float(kept), feeds), feeds)["cosine"]
    everything = budgets.measure(reference, outputs_of(ranking.confirm, feeds), feeds)["cosine"]
    # as the budget sees them, the same graph: within a tenth of what int8 takes away (float rounding and
    # the half-stored float weights differ, and the int8 rounding downstream follows them; the search
    # judges the written graph of the set it chose, and goes on if that one misses)
    assert abs(gated - written) <= 0.1 * (1 - written) and everything < written, (gated, written, everything)


def test_a_dynamic_int8_search_costs_a_few_whole_graphs(edge_bundle, tmp_path):
    from edgeformer.quantize.stage import quantize_bundle

    manifest = quantize_bundle(edge_bundle("gpt-mini"), tmp_path / "q", budget={"cosine": 0.99999}, samples=8)
    entry = manifest["quantization"]["graphs"]["model"]
    n = entry["graphs_tried"]
    # all-int8, all-float, the bisection and the chosen graph again: before, one more graph per node (10)
    assert entry["kept_in_float"] and n <= 3 + math.ceil(math.log2(10)), entry

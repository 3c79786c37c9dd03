"""int4: what the report says was kept in float is what the written graph holds (issue #24), the
search ranks nodes without a whole-model run per node, and the MatMulNBits settings follow the CPU."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from edgeformer import budget as budgets
from edgeformer.export.manifest_read import read_manifest
from edgeformer.quantize import calibration, int8, tied_head, weights
from edgeformer.quantize.mixed import _session, outputs_of, weight_params
from edgeformer.quantize.passes import int4_nodes
from edgeformer.quantize.stage import QuantizeError, quantize_bundle, verdict_rows


def _measured_again(src, out, manifest, rows: list) -> dict[str, float]:
    """The budget metrics of the written graph against the float bundle's, on the rows the search used."""
    feeds = [f for r in rows for f in calibration.graph_feeds(manifest, r)["model"]]
    ref = outputs_of(_session(src / "model.onnx"), feeds)
    got = outputs_of(_session(out / "model.onnx"), feeds)
    return budgets.measure(ref, got, feeds, language_model=True)


@pytest.fixture(scope="module")
def mixed(edge_bundle, tmp_path_factory):
    """gpt-mini in int4 under a budget all-int4 misses, so the search keeps some nodes in float."""
    src = edge_bundle("gpt-mini")
    out = tmp_path_factory.mktemp("int4") / "w4"
    return src, out, quantize_bundle(src, out, precision="int4", budget={"cosine": 0.995}, samples=8)


def test_every_node_the_report_keeps_in_float_is_float_in_the_graph(mixed):
    src, out, manifest = mixed
    entry = manifest["quantization"]["graphs"]["model"]
    floats = [k["node"] for k in entry["kept_in_float"]]
    int4 = entry["int4_nodes"]
    model, _ = tied_head.untie(int8.name_nodes(onnx.load(str(src / "model.onnx"))))
    candidates = weights.int4_candidates(model)
    assert floats and int4, entry  # a real mix: the budget needs some, not all, in float
    assert sorted(floats + int4) == sorted(candidates) and not set(floats) & set(int4)
    graph = onnx.load(str(out / "model.onnx")).graph
    nodes = {n.name: n for n in graph.node}
    inits = {i.name: i for i in graph.initializer}
    for name in floats:  # a MatMul reading its float weight, and no int4 twin
        assert nodes[name].op_type == "MatMul", name
        assert inits[nodes[name].input[1]].data_type == onnx.TensorProto.FLOAT, name
        assert name + weights.SUFFIX not in nodes, name
    for name in int4:
        assert nodes[name + weights.SUFFIX].op_type == "MatMulNBits" and name not in nodes, name
    assert sum(n.op_type == "MatMulNBits" for n in graph.node) == len(int4)
    assert len(floats) == len(entry["kept_in_float"])  # the report and the graph count the same


def test_the_written_bundle_measures_what_the_search_reported(mixed):
    src, out, manifest = mixed
    entry = manifest["quantization"]["graphs"]["model"]
    assert entry["within_budget"] and entry["measured"]["cosine"] >= 0.995
    config, tokenizer = manifest["config"], manifest.get("tokenizer")
    calib = _measured_again(src, out, manifest, [calibration.load_rows(config, tokenizer, split="train", n=8)])
    validation = _measured_again(src, out, manifest, verdict_rows(config, tokenizer, None, 8, None))
    for metric in ("cosine", "top1", "perplexity"):
        assert entry["validation"][metric] == pytest.approx(validation[metric], abs=2e-6), metric
        # the search judges the worse of its calibration rows and the verdict's rows
        worse = max if metric == "perplexity" else min
        assert entry["measured"][metric] == pytest.approx(worse(calib[metric], validation[metric]), abs=2e-6), metric


def test_the_search_costs_a_few_whole_graphs_not_one_per_node(mixed):
    entry = mixed[2]["quantization"]["graphs"]["model"]
    n = len(entry["kept_in_float"]) + len(entry["int4_nodes"])
    # all-int4, all-float, the bisection, and the chosen graph again: no graph per node
    assert entry["graphs_tried"] <= 3 + math.ceil(math.log2(n)), entry["graphs_tried"]
    assert all(set(k) == {"node", "budget_used_alone"} for k in entry["kept_in_float"])
    used = [k["budget_used_alone"] for k in entry["kept_in_float"]]
    assert all(u > 0 for u in used)
    # kept in float by budget bought back per float weight (a big node in float is read at full width)
    model, _ = tied_head.untie(int8.name_nodes(onnx.load(str(mixed[0] / "model.onnx"))))
    params = weight_params(model, [k["node"] for k in entry["kept_in_float"]])
    per_weight = [k["budget_used_alone"] / params[k["node"]] for k in entry["kept_in_float"]]
    assert per_weight == sorted(per_weight, reverse=True), entry["kept_in_float"]
    assert entry["float_weight_bytes"] == 4 * sum(params.values())


def test_to_int4_leaves_the_model_it_is_given_unchanged(edge_bundle, tmp_path):
    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    before = model.SerializeToString()
    first, keep = weights.int4_candidates(model)[:2]
    weights.to_int4(model, tmp_path / "all.onnx")
    assert model.SerializeToString() == before  # the quantizer used to rewrite it in place
    weights.to_int4(model, tmp_path / "mixed.onnx", exclude=(keep,))
    layout = weights.int4_layout(onnx.load(str(tmp_path / "mixed.onnx")).graph, [first, keep])
    assert layout == {first: "int4", keep: "float"}


def test_the_tied_head_is_int4_too(edge_bundle, tmp_path):
    """gpt-mini's LM head reads Transpose(embedding): untied, it is a MatMulNBits, not an fp32 read per token."""
    manifest = quantize_bundle(edge_bundle("gpt-mini"), tmp_path / "w4", precision="int4", samples=8)
    entry = manifest["quantization"]["graphs"]["model"]
    assert entry["within_budget"] and not entry["kept_in_float"]
    graph = onnx.load(str(tmp_path / "w4" / "model.onnx")).graph
    vocab = manifest["config"]["vocab_size"]
    heads = [n for n in graph.node if n.op_type == "MatMulNBits" and onnx.helper.get_node_attr_value(n, "N") == vocab]
    assert len(heads) == 1 and not [n for n in graph.node if n.op_type == "MatMul"]
    assert heads[0].name[: -len(weights.SUFFIX)] in entry["int4_nodes"]


def test_int4_settings_follow_the_cpu_and_are_recorded(mixed):
    assert weights.int4_settings({"avx2", "fma"})["accuracy_level"] == 4
    assert weights.int4_settings({"asimd", "asimddp"})["accuracy_level"] == 4
    plain = weights.int4_settings({"sse4_2"})
    assert plain["accuracy_level"] == 1 and plain["compute"].startswith("fp32")
    assert weights.int4_settings(set())["block_size"] == 32
    _, out, manifest = mixed
    settings = manifest["quantization"]["settings"]
    assert settings == weights.int4_settings() and read_manifest(out)["quantization"]["settings"] == settings
    for node in onnx.load(str(out / "model.onnx")).graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["block_size"] == settings["block_size"], attrs
            assert attrs["accuracy_level"] == settings["accuracy_level"], attrs


def test_a_graph_that_differs_from_the_report_is_refused(edge_bundle, tmp_path):
    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    candidates = weights.int4_candidates(model)
    weights.to_int4(model, tmp_path / "all.onnx")  # every node int4, a report claiming one kept in float
    with pytest.raises(QuantizeError, match=rf"{candidates[0]}: int4 \(reported float\).*bug in edgeformer"):
        int4_nodes(tmp_path / "all.onnx", candidates, [candidates[0]])
    assert int4_nodes(tmp_path / "all.onnx", candidates, []) == candidates


def test_rank_scores_each_node_alone_in_int4_from_one_session(edge_bundle, tmp_path):
    """A gate open on one node is the whole model with that node alone in int4: the same numbers as
    writing that graph; a MatMul with an outlier in every block of its weight ranks first."""
    from edgeformer.quantize import int4_rank

    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    candidates = weights.int4_candidates(model)
    target = candidates[3]
    inits = {i.name: i for i in model.graph.initializer}
    weight = inits[next(n for n in model.graph.node if n.name == target).input[1]]
    w = onnx.numpy_helper.to_array(weight).copy()
    w[::32] *= 40.0  # an outlier in every block of 32 along the input dimension: coarse int4 steps
    weight.CopyFrom(onnx.numpy_helper.from_array(w, weight.name))
    weights.to_int4(model, tmp_path / "all.onnx")
    rows = np.random.default_rng(0).integers(0, 500, (2, 16))
    feeds = [{"input_ids": rows, "attention_mask": np.ones_like(rows), "position_ids": np.tile(np.arange(16), (2, 1))}]
    feeds[0] |= {i.name: np.zeros((2, 8, 0, 16), np.float32) for i in model.graph.input if i.name.startswith("past")}
    onnx.save(model, tmp_path / "float.onnx")
    reference = outputs_of(_session(tmp_path / "float.onnx"), feeds)
    seen: list[list[dict[str, np.ndarray]]] = []

    def judge(got):
        seen.append(got)
        return 1 - budgets.measure(reference, got, feeds)["cosine"]

    scores, key = int4_rank.rank(model, tmp_path / "all.onnx", candidates, feeds, judge)
    assert key == "budget_used_alone" and set(scores) == set(candidates) and len(seen) == len(candidates)
    assert max(scores, key=scores.get) == target, scores
    weights.to_int4(model, tmp_path / "one.onnx", exclude=tuple(c for c in candidates if c != target))
    alone = outputs_of(_session(tmp_path / "one.onnx"), feeds)  # the graph written with only target in int4
    np.testing.assert_allclose(seen[3][0]["logits"], alone[0]["logits"], rtol=0, atol=1e-5)

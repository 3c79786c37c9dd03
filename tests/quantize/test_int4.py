"""int4: what the report says was kept in float is what the written graph holds (issue #24), the
search ranks nodes without a whole-model run per node, and the MatMulNBits settings follow the CPU."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from edgeformer import budget as budgets
from edgeformer.export.manifest_read import read_manifest
from edgeformer.quantize import calibration, int4_embedding, int8, tied_head, weights
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


def test_every_node_the_report_keeps_out_of_int4_is_8_bit_in_the_graph(mixed):
    """The search's kept level is MatMulNBits at 8 bits, not fp32: node by node, the report and the graph agree."""
    src, out, manifest = mixed
    entry = manifest["quantization"]["graphs"]["model"]
    int8_nodes, int4 = entry["int8_nodes"], entry["int4_nodes"]
    model, _ = tied_head.untie(int8.name_nodes(onnx.load(str(src / "model.onnx"))))
    candidates = weights.int4_candidates(model)
    assert int8_nodes and int4, entry  # a real mix: the budget needs some, not all, kept out of int4
    assert sorted(int8_nodes + int4) == sorted(candidates) and not set(int8_nodes) & set(int4)
    assert entry["kept_in_float"] == [] and [k["node"] for k in entry["kept_at_8_bits"]] == int8_nodes
    assert entry["float_weight_bytes"] == 0
    graph = onnx.load(str(out / "model.onnx")).graph
    nodes = {n.name: n for n in graph.node}

    def bits(node):
        return onnx.helper.get_node_attr_value(node, "bits")

    for name in int8_nodes:  # a MatMulNBits at 8 bits, no float MatMul, no int4 twin
        assert nodes[name + "_Q8"].op_type == "MatMulNBits" and bits(nodes[name + "_Q8"]) == 8, name
        assert name not in nodes and name + weights.SUFFIX not in nodes, name
    for name in int4:
        assert nodes[name + weights.SUFFIX].op_type == "MatMulNBits" and name not in nodes, name
        assert bits(nodes[name + weights.SUFFIX]) == 4, name
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert sorted(bits(n) for n in nbits) == [4] * len(int4) + [8] * len(int8_nodes)
    assert not [n for n in graph.node if n.op_type == "MatMul"]  # nothing reads a float weight per token
    from edgeformer.cli.quantize import report_lines

    line = report_lines(manifest["quantization"])[0]  # what `edgeformer quantize` prints
    assert f"node(s) in float, {len(int8_nodes)} kept at 8 bits; validation" in line and ", 0 node(s)" in line, line


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
    n = len(entry["int8_nodes"]) + len(entry["int4_nodes"])
    # all-int4, all-float, the bisection, and the chosen graph again: no graph per node
    assert entry["graphs_tried"] <= 3 + math.ceil(math.log2(n)), entry["graphs_tried"]
    kept = entry["kept_at_8_bits"]
    assert all(set(k) == {"node", "budget_used_alone"} for k in kept)
    used = [k["budget_used_alone"] for k in kept]
    assert all(u > 0 for u in used)
    # kept by budget bought back per weight (a big node kept is read at twice its int4 bytes)
    model, _ = tied_head.untie(int8.name_nodes(onnx.load(str(mixed[0] / "model.onnx"))))
    params = weight_params(model, [k["node"] for k in kept])
    per_weight = [k["budget_used_alone"] / params[k["node"]] for k in kept]
    assert per_weight == sorted(per_weight, reverse=True), kept


def test_to_int4_leaves_the_model_it_is_given_unchanged(edge_bundle, tmp_path):
    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    before = model.SerializeToString()
    first, keep = weights.int4_candidates(model)[:2]
    weights.to_int4(model, tmp_path / "all.onnx")
    assert model.SerializeToString() == before  # the quantizer used to rewrite it in place
    weights.to_int4(model, tmp_path / "mixed.onnx", exclude=(keep,))
    layout = weights.int4_layout(onnx.load(str(tmp_path / "mixed.onnx")).graph, [first, keep])
    assert layout == {first: "int4", keep: "int8"}  # kept out of int4: MatMulNBits at 8 bits
    assert model.SerializeToString() == before
    floats = weights.int4_settings() | {"kept_bits": 0}
    weights.to_int4(model, tmp_path / "float.onnx", exclude=(keep,), settings=floats)
    layout = weights.int4_layout(onnx.load(str(tmp_path / "float.onnx")).graph, [first, keep])
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
    # the token embedding reads the head's own 4-bit table: no float (V, C) table left in the bundle
    embeddings = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    assert [(n.input[0], onnx.helper.get_node_attr_value(n, "bits")) for n in embeddings] == [(heads[0].input[1], 4)]
    width = onnx.helper.get_node_attr_value(heads[0], "K")
    floats = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    tables = [i.name for i in floats if math.prod(i.dims) >= vocab * width]
    assert not tables, tables


def test_int4_settings_follow_the_cpu_and_are_recorded(mixed):
    assert weights.int4_settings({"avx2", "fma"})["accuracy_level"] == 4
    assert weights.int4_settings({"asimd", "asimddp"})["accuracy_level"] == 4
    plain = weights.int4_settings({"sse4_2"})
    assert plain["accuracy_level"] == 1 and plain["compute"].startswith("fp32")
    assert weights.int4_settings(set())["block_size"] == 32
    _, out, manifest = mixed
    settings = manifest["quantization"]["settings"]
    assert settings == weights.int4_settings() | {"embedding": int4_embedding.DESCRIPTION}
    assert settings["kept_bits"] == 8 and read_manifest(out)["quantization"]["settings"] == settings
    for node in onnx.load(str(out / "model.onnx")).graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["block_size"] == settings["block_size"], attrs
            assert attrs["accuracy_level"] == settings["accuracy_level"], attrs


def test_a_graph_that_differs_from_the_report_is_refused(edge_bundle, tmp_path):
    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    candidates = weights.int4_candidates(model)
    weights.to_int4(model, tmp_path / "all.onnx")  # every node int4, a report claiming one kept in float
    with pytest.raises(QuantizeError, match=rf"{candidates[0]}: int4 \(reported int8\).*bug in edgeformer"):
        int4_nodes(tmp_path / "all.onnx", candidates, [candidates[0]])
    assert int4_nodes(tmp_path / "all.onnx", candidates, []) == candidates


def test_rank_scores_each_node_alone_in_int4_from_one_session(edge_bundle, tmp_path):
    """A gate open on one node is the whole model with that node alone in int4: the same numbers as
    writing that graph; a MatMul with an outlier in every block of its weight ranks first."""
    from edgeformer.quantize import sensitivity

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

    ranking = sensitivity.rank(model, tmp_path / "all.onnx", candidates, feeds, judge)
    scores = ranking.scores
    assert ranking.key == "budget_used_alone" and set(scores) == set(candidates)
    assert len(seen) == 1 + len(candidates)  # the all-closed floor, then one run per candidate
    seen.pop(0)
    assert max(scores, key=scores.get) == target, scores
    floats = weights.int4_settings() | {"kept_bits": 0}
    weights.to_int4(model, tmp_path / "one.onnx", exclude=tuple(c for c in candidates if c != target), settings=floats)
    alone = outputs_of(_session(tmp_path / "one.onnx"), feeds)  # the graph written with only target in int4
    np.testing.assert_allclose(seen[3][0]["logits"], alone[0]["logits"], rtol=0, atol=1e-5)


def _tied_model(vocab: int, width: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """embedding = Gather(E, ids); logits = MatMul(Relu(embedding), Transpose(E)): a tied table, random weights."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((vocab, width)).astype(np.float32)
    table[3, 5] = 9.0  # an outlier: its block's steps are coarse, the others' fine
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("Identity", ["emb"], ["embedding"], name="copy"),
        helper.make_node("Relu", ["emb"], ["h"], name="act"),
        helper.make_node("Transpose", ["E"], ["Et"], name="head_t", perm=[1, 0]),
        helper.make_node("MatMul", ["h", "Et"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "E")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table


@pytest.mark.parametrize("kept", [False, True])
def test_the_embedding_gathers_the_heads_quantized_rows_within_their_step(tmp_path, kept):
    """GatherBlockQuantized on the head's MatMulNBits table: each value within half a quantization step
    of the fp32 gather (step = its block's largest |value| / 7 at 4 bits, / 127 at 8), one table in the file."""
    model, table = _tied_model(vocab=50, width=64)
    untied, heads = tied_head.untie(model)
    out = weights.to_int4(untied, tmp_path / "w.onnx", exclude=("head",) if kept else ())
    assert int4_embedding.share(out, heads) == 1
    graph = onnx.load(str(out)).graph
    assert [n.op_type for n in graph.node if n.op_type.endswith(("Quantized", "NBits"))] == [
        "GatherBlockQuantized", "MatMulNBits"]  # fmt: skip
    assert [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims[0] == 50] == [
        "E.T_scales"]  # fmt: skip
    ids = np.array([[3, 0, 49], [7, 3, 1]])
    got = _session(out).run(["embedding"], {"ids": ids})[0]
    assert got.shape == (2, 3, 64)
    levels = 127 if kept else 7
    step = np.repeat(np.abs(table.reshape(50, 2, 32)).max(axis=2), 32, axis=1) / levels
    error = np.abs(got - table[ids])
    assert np.all(error <= 0.5 * step[ids] + 1e-6), float((error / step[ids]).max())
    assert error.max() > 0  # quantized, not the float table


def test_an_int4_decoder_is_smaller_than_its_int8_bundle(edge_bundle, tmp_path):
    src = edge_bundle("gpt-mini")
    sizes = {}
    for precision in ("int4", "int8"):
        quantize_bundle(src, tmp_path / precision, precision=precision, samples=4)
        sizes[precision] = (tmp_path / precision / "model.onnx").stat().st_size
    assert sizes["int4"] < 0.75 * sizes["int8"], sizes

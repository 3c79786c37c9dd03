"""The ordered pipeline: 100% coverage on every model family, parity after every pass, and a
pass that breaks the numbers is named and undone."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import onnx_ir as ir
import pytest

from edgeformer.export.graphs import make_inputs
from edgeformer.export.source import source_from_card
from edgeformer.export.trace import trace
from edgeformer.fusions import pipeline, tables
from edgeformer.fusions.passes import FusionPass
from edgeformer.fusions.pipeline import FusionParityError, fuse_model
from edgeformer.pipeline import export_bundle
from edgeformer.zoo import resolve_card, resolve_target
from tests.conftest import EDGE_CARDS
from tests.fusions.helpers import run

LEFT_UNFUSED = {"Softmax", "ReduceMean", "Erf", "Tanh"}


class _Bundles(dict):
    """(card, target) -> (path, manifest), exported on first use."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, key):
        name, target = key if isinstance(key, tuple) else (key, "cpu-fp32")
        path = self.root / f"{name}-{target}"
        self[key] = (path, export_bundle(source_from_card(resolve_card(name)), resolve_target(target), path))
        return self[key]


@pytest.fixture(scope="module")
def fused_bundles(tmp_path_factory):
    return _Bundles(tmp_path_factory.mktemp("fused"))


# contrib: onnxruntime's MultiHeadAttention & co., on every edge card; portable: the standard
# opset-23 Attention op, on one card of each family (encoder, decoder, encoder-decoder)
CASES = [(n, "cpu-fp32") for n in EDGE_CARDS] + [
    (n, "portable-fp32") for n in ("bert-mini", "gpt-mini", "transformer-mini")
]


@pytest.mark.parametrize(("name", "target"), CASES)
def test_every_edge_card_fuses_completely_with_parity(fused_bundles, name, target):
    path, manifest = fused_bundles[name, target]
    assert manifest["parity"]["ok"] and manifest["parity"]["worst_max_rel"] <= 1e-4
    cfg = resolve_card(name).config
    for graph, report in manifest["fusions"].items():
        assert report["complete"], report["not_fused"]
        cov = report["coverage"]
        n_attention = {"model": cfg.n_layers, "encoder": cfg.n_layers, "decoder": 2 * cfg.decoder_layers}[graph]
        assert cov["attention"] == {"blocks": n_attention, "fused": n_attention}  # self and cross
        assert cov["layer_norm"]["fused"] == cov["layer_norm"]["blocks"] > 0
        assert cov["gelu"]["fused"] == cov["gelu"]["blocks"]
        ops = Counter(n.op_type for n in ir.load(path / f"{graph}.onnx").graph.all_nodes())
        assert not LEFT_UNFUSED & set(ops), ops
        assert ops["MultiHeadAttention"] + ops["Attention"] == n_attention
        if target == "portable-fp32":
            model = ir.load(path / f"{graph}.onnx")
            assert {n.domain for n in model.graph.all_nodes()} <= {"", "ai.onnx"}  # standard ops only
            assert model.opset_imports[""] == 23 and ops["Attention"] == n_attention
        # every pass was fine: the fused graph was checked once, against the unfused one
        assert report["check"] == "once" and report["max_rel_error"] <= 1e-4
        assert all(p["max_rel_error"] is None for p in report["passes"])
        assert report["parity_not_checked"] is None and not report["rolled_back"]


def test_decoder_attention_keeps_the_cache(fused_bundles):
    path, manifest = fused_bundles["gpt-mini", "cpu-fp32"]
    mha = [n for n in ir.load(path / "model.onnx").graph.all_nodes() if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 2
    outputs = {v.name: v for v in ir.load(path / "model.onnx").graph.outputs}
    for i in range(2):
        # the cache grows by Concat(past, new); the fused attention reads the whole cache
        present = outputs[f"present.{i}.key"].producer()
        assert present.op_type == "Concat" and present.inputs[0].name == f"past_key_values.{i}.key"
    assert all(n.attributes["num_heads"].value == 8 for n in mha)
    assert manifest["parity"]["generation"]["identical"]


def _traced(name):
    source = source_from_card(resolve_card(name))
    plan = source.plans[0]
    model = trace(plan, 18)
    feeds = [make_inputs(plan, {"batch": 2, "sequence": 5, "past_sequence": 3}, seed=1)]
    return model, feeds


def _break_weights(model: ir.Model) -> int:
    """A buggy 'fusion': scales the first weight matrix."""
    for init in model.graph.initializers.values():
        if init.const_value is not None and init.const_value.numpy().ndim == 2:
            init.const_value = ir.tensor(init.const_value.numpy() * 2.0, name=init.name)
            return 1
    return 0


def test_a_pass_that_changes_the_numbers_is_named_and_undone(monkeypatch):
    model, feeds = _traced("bert-mini")
    reference = run(model, feeds[0])
    passes = list(tables.CONTRIB)
    passes.insert(3, FusionPass("buggy_rule", _break_weights))
    monkeypatch.setitem(tables.TABLES, "contrib", tuple(passes))
    report = fuse_model(model, feeds=feeds)
    buggy = next(p for p in report.passes if p.name == "buggy_rule")
    assert buggy.rolled_back.startswith("it changed the outputs") and buggy.rewrites == 0
    assert report.to_dict()["rolled_back"] == {"buggy_rule": buggy.rolled_back}
    assert report.complete  # the other passes still fused everything
    assert report.check == "per pass" and report.max_rel_error is not None and report.max_rel_error <= 1e-4
    for a, b in zip(reference, run(model, feeds[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)

    model, feeds = _traced("bert-mini")
    with pytest.raises(FusionParityError, match="fusion pass 'buggy_rule'"):
        fuse_model(model, feeds=feeds, strict=True)


def _count_sessions(monkeypatch) -> list[int]:
    from edgeformer.fusions import checks

    built = [0]
    real = checks.session

    def counting(snap):
        built[0] += 1
        return real(snap)

    monkeypatch.setattr(checks, "session", counting)
    return built


def test_passes_that_are_all_fine_cost_one_check_session(monkeypatch):
    """The unfused graph's outputs (one session) and the fused graph's (one): no session per pass;
    a failing pass costs the passes again, each checked (a session per pass that changed the graph)."""
    model, feeds = _traced("bert-mini")
    built = _count_sessions(monkeypatch)
    report = fuse_model(model, feeds=feeds)
    assert built[0] == 2 and report.check == "once" and report.complete
    assert report.max_rel_error is not None and report.max_rel_error <= 1e-4
    changed = sum(1 for p in report.passes if p.rewrites or p.name == "cleanup")
    assert changed >= 8  # the per-pass check would have built this many

    model, feeds = _traced("bert-mini")
    passes = list(tables.CONTRIB)
    passes.insert(3, FusionPass("buggy_rule", _break_weights))
    monkeypatch.setitem(tables.TABLES, "contrib", tuple(passes))
    built[0] = 0
    report = fuse_model(model, feeds=feeds)
    assert report.check == "per pass" and set(report.to_dict()["rolled_back"]) == {"buggy_rule"}
    assert built[0] >= 2 + changed  # the failed whole check, then the passes one by one


def _unknown_op(model: ir.Model) -> int:
    """A buggy 'fusion': turns the first MatMul into an op no runtime has."""
    for node in model.graph.all_nodes():
        if node.op_type == "MatMul":
            node.op_type = "NoSuchOp"
            return 1
    return 0


def test_a_pass_that_breaks_the_graph_is_named_and_undone(monkeypatch):
    model, feeds = _traced("bert-mini")
    passes = list(tables.CONTRIB)
    passes.insert(3, FusionPass("breaking_rule", _unknown_op))
    monkeypatch.setitem(tables.TABLES, "contrib", tuple(passes))
    report = fuse_model(model, feeds=feeds)
    breaking = next(p for p in report.passes if p.name == "breaking_rule")
    assert breaking.rolled_back.startswith("the graph no longer runs") and "NoSuchOp" in breaking.rolled_back
    assert not any(n.op_type == "NoSuchOp" for n in model.graph.all_nodes())
    assert report.complete and report.parity_not_checked == "" and report.check == "per pass"
    later = report.passes[report.passes.index(breaking) + 1 :]
    assert sum(p.max_rel_error is not None for p in later) >= 4  # the passes after it were still checked


def test_intermediate_forms_are_checked_with_the_pass_that_completes_them(monkeypatch):
    # onnxscript's sdpa pass leaves ai.onnxruntime._fusion:SDPA, which onnxruntime cannot load;
    # the mha passes turn it into MultiHeadAttention. A bug between them is caught when they are.
    model, feeds = _traced("bert-mini")
    report = fuse_model(model, feeds=feeds)
    names = [p.name for p in report.passes]
    sdpa = report.passes[names.index("sdpa")]
    assert sdpa.rewrites == 2 and report.check == "once"  # all fine: the fused graph alone was checked
    assert not report.to_dict()["rolled_back"]

    model, feeds = _traced("bert-mini")
    passes = list(tables.CONTRIB)
    passes.insert([p.name for p in passes].index("sdpa") + 1, FusionPass("buggy_rule", _break_weights))
    monkeypatch.setitem(tables.TABLES, "contrib", tuple(passes))
    reference = run(model, feeds[0])
    report = fuse_model(model, feeds=feeds)
    undone = report.to_dict()["rolled_back"]
    assert {"sdpa", "buggy_rule"} <= set(undone), undone
    assert report.passes[names.index("sdpa")].deferred  # checked pass by pass, with the next one
    assert all(
        "changed the outputs" in why and "checked as one step, sdpa + buggy_rule" in why for why in undone.values()
    )
    assert not any(n.domain == pipeline.INTERMEDIATE_DOMAIN for n in model.graph.all_nodes())
    for a, b in zip(reference, run(model, feeds[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)

    # with nothing after it to complete its form, the sdpa pass is undone at the end
    model, feeds = _traced("bert-mini")
    unfinished = [p for p in tables.CONTRIB if not p.name.startswith(("mha", "attention", "sdpa_via"))]
    monkeypatch.setitem(tables.TABLES, "contrib", tuple(unfinished))
    report = fuse_model(model, feeds=feeds)
    undone = report.to_dict()["rolled_back"]
    assert "it left ai.onnxruntime._fusion:SDPA, which onnxruntime cannot run" in undone["sdpa"], undone
    assert not any(n.domain == pipeline.INTERMEDIATE_DOMAIN for n in model.graph.all_nodes())
    assert report.coverage["attention"]["fused"] == 0 and not report.complete
    for a, b in zip(reference, run(model, feeds[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_unfused_blocks_are_reported_with_a_reason(monkeypatch):
    model, feeds = _traced("gpt-mini")
    monkeypatch.setitem(tables.TABLES, "contrib", tuple(p for p in tables.CONTRIB if p.name != "mask_to_bias"))
    report = fuse_model(model, feeds=feeds, debug=True)
    assert not report.complete
    attention = [m for m in report.not_fused if m["kind"] == "attention"]
    assert len(attention) == 2, attention
    for miss in attention:  # the attention rule's words, and what feeds the block
        assert miss["reason"].startswith("attention rule SDPA, pattern stops:") and "Softmax <- Where" in miss["reason"]
    assert report.coverage["attention"] == {"blocks": 2, "fused": 0}
    assert report.debug  # the matcher's own account


def test_fuse_command_on_a_file_and_a_bundle(tmp_path, fused_bundles):
    from click.testing import CliRunner

    from edgeformer.cli import main

    unfused = tmp_path / "plain"
    export_bundle(source_from_card(resolve_card("bert-mini")), resolve_target("unfused-fp32"), unfused, check=False)
    assert "fusions" not in __import__("json").loads((unfused / "manifest.json").read_text())
    runner = CliRunner()
    result = runner.invoke(main, ["fuse", str(unfused / "model.onnx"), "-o", str(tmp_path / "f.onnx")])
    assert result.exit_code == 0, result.output
    assert "attention 2/2" in result.output and (tmp_path / "f.onnx").is_file()
    result = runner.invoke(main, ["fuse", str(unfused), "-o", str(tmp_path / "fb")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["check", str(tmp_path / "fb")])
    assert result.exit_code == 0, result.output
    again = runner.invoke(main, ["fuse", str(fused_bundles["bert-mini", "cpu-fp32"][0]), "-o", str(tmp_path / "x")])
    assert again.exit_code == 1 and "already fused" in again.output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    result = runner.invoke(main, ["fuse", str(bad)])
    assert result.exit_code == 1 and "not a valid ONNX file" in result.output
    shutil.rmtree(tmp_path / "fb")


def _fixed_reshape_graph(path, op=("", "Reshape")):
    """A graph with symbolic inputs that only runs at batch 1, sequence 128 (a Reshape to fixed
    sizes, as older exporters write), or with an op no runtime has."""
    from onnx import TensorProto, helper, numpy_helper

    emb = numpy_helper.from_array(np.random.default_rng(0).random((60, 16), dtype=np.float32), "emb")
    shape = numpy_helper.from_array(np.array([1, 128, 16], dtype=np.int64), "shape")
    domain, op_type = op
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node(op_type, ["e", "shape"], ["y"], domain=domain),
    ]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(nodes, "g", [ids], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    graph.initializer.extend([emb, shape])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    __import__("onnx").save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_fuse_says_when_the_source_graph_cannot_be_checked_and_takes_sizes(tmp_path):
    from click.testing import CliRunner

    from edgeformer.cli import main

    runner = CliRunner()
    src = _fixed_reshape_graph(tmp_path / "fixed.onnx")
    result = runner.invoke(main, ["fuse", str(src), "-o", str(tmp_path / "a.onnx")])
    assert result.exit_code == 0, result.output
    assert (
        "per-pass parity NOT checked: the unfused graph does not run under onnxruntime (Reshape node" in result.output
    )
    assert "requested shape:{1,128,16}" in result.output and "the check fed batch=2, seq=7" in result.output
    assert "--dim NAME=SIZE" in result.output and "Traceback" not in result.output

    result = runner.invoke(
        main, ["fuse", str(src), "-o", str(tmp_path / "b.onnx"), "--dim", "batch=1", "--dim", "seq=128"]
    )
    assert result.exit_code == 0, result.output
    assert "NOT checked" not in result.output
    assert "the fused graph checked against the unfused one, 0 of output scale" in result.output

    result = runner.invoke(main, ["fuse", str(src), "-o", str(tmp_path / "c.onnx"), "--dim", "sequence=128", "--json"])
    assert (
        result.exit_code == 1 and "--dim sequence: the graph's inputs have no dimension of that name" in result.output
    )
    assert "(they have batch, seq)" in result.output and not (tmp_path / "c.onnx").exists()
    result = runner.invoke(main, ["fuse", str(src), "--dim", "seq=0"])
    assert result.exit_code == 2 and "NAME=SIZE with a positive integer" in result.output

    custom = _fixed_reshape_graph(tmp_path / "custom.onnx", op=("com.example", "NoSuchOp"))
    result = runner.invoke(main, ["fuse", str(custom), "-o", str(tmp_path / "d.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    report = __import__("json").loads(result.stdout)["custom.onnx"]
    assert "com.example:NoSuchOp" in report["parity_not_checked"]
    assert all(p["max_rel_error"] is None for p in report["passes"])

"""The ordered pipeline: 100% coverage on every model family, parity after every pass, and a
pass that breaks the numbers is named and undone."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import onnx_ir as ir
import pytest

from edgeformer.export.bundle import export_bundle, source_from_card
from edgeformer.export.graphs import make_inputs
from edgeformer.export.trace import trace
from edgeformer.fusions import pipeline
from edgeformer.fusions.pipeline import FusionParityError, fuse_model
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
        checked = [p for p in report["passes"] if p["max_rel_error"] is not None]
        assert len(checked) >= 4 and all(p["max_rel_error"] <= 1e-4 for p in checked)


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
    passes = list(pipeline.CONTRIB_PASSES)
    passes.insert(3, ("buggy_rule", _break_weights))
    monkeypatch.setattr(pipeline, "CONTRIB_PASSES", passes)
    report = fuse_model(model, feeds=feeds)
    buggy = next(p for p in report.passes if p.name == "buggy_rule")
    assert buggy.rolled_back.startswith("it changed the outputs") and buggy.rewrites == 0
    assert report.to_dict()["rolled_back"] == {"buggy_rule": buggy.rolled_back}
    assert report.complete  # the other passes still fused everything
    for a, b in zip(reference, run(model, feeds[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)

    model, feeds = _traced("bert-mini")
    with pytest.raises(FusionParityError, match="fusion pass 'buggy_rule'"):
        fuse_model(model, feeds=feeds, strict=True)


def test_unfused_blocks_are_reported_with_a_reason(monkeypatch):
    model, feeds = _traced("gpt-mini")
    monkeypatch.setattr(pipeline, "CONTRIB_PASSES", [p for p in pipeline.CONTRIB_PASSES if p[0] != "mask_to_bias"])
    report = fuse_model(model, feeds=feeds, debug=True)
    assert not report.complete
    attention = [m for m in report.not_fused if m["kind"] == "attention"]
    assert len(attention) == 2 and all("Softmax <- Where" in m["reason"] for m in attention), attention
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

"""Quantization as passes: one per precision and mode, chosen from a table, each declaring what it
needs and returning what it changed (reduced nodes, nodes kept in float, its report fields)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeformer.quantize import int8, passes, stage, weights
from edgeformer.quantize.passes import NEEDS, PASSES, QuantizeError, pass_for
from edgeformer.runtime.bundle import stamp_manifest
from edgeformer.targets import PRECISIONS, QUANTIZATION_MODES


def test_the_table_covers_every_reduced_precision_and_mode():
    assert {p for p, _ in PASSES} == set(PRECISIONS) - {"fp32"}
    assert passes.MODES == QUANTIZATION_MODES
    chosen = {(p, m): type(pass_for(p, m, "minmax")).__name__ for p in ("int8", "int4", "fp16") for m in passes.MODES}
    assert chosen == {
        ("int8", "dynamic"): "DynamicInt8", ("int8", "static"): "StaticInt8",
        ("int4", "dynamic"): "Int4", ("int4", "static"): "Int4",  # weight-only whatever --mode says
        ("fp16", "dynamic"): "Fp16", ("fp16", "static"): "Fp16",
    }  # fmt: skip
    for key, make in PASSES.items():
        step = make("percentile")
        assert (step.precision, step.mode) == key and set(step.needs) <= set(NEEDS), step
    assert pass_for("int8", "static", "entropy").method == "entropy"
    assert pass_for("int8", "dynamic", "entropy").method is None  # dynamic int8 measures no ranges


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("int2", "dynamic", "minmax"), "precision 'int2' is not one of int8, int4, fp16"),
        (("int8", "fast", "minmax"), "mode 'fast' is not one of dynamic, static"),
        (("int8", "static", "mean"), "calibration method 'mean' is not one of minmax, percentile, entropy"),
    ],
)
def test_an_unknown_request_names_what_is_accepted(args, message):
    with pytest.raises(QuantizeError, match=message):
        pass_for(*args)


def test_only_the_pass_that_needs_calibration_rows_refuses_without_them(edge_bundle, tmp_path):
    """The stage asks the pass (its ``needs``), not the precision and mode, whether rows are required."""
    src = tmp_path / "src"
    src.mkdir()
    for f in edge_bundle("bert-mini").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["tokenizer"] = ""  # not byte text: static int8 has no rows of its own
    (src / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(src)
    assert [k for k, make in PASSES.items() if "calibration_rows" in make("minmax").needs] == [("int8", "static")]
    with pytest.raises(QuantizeError, match="static int8 needs calibration data"):
        stage.quantize_bundle(src, tmp_path / "s", mode="static")


def _feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    rows = np.random.default_rng(0).integers(0, 250, (2, 12))
    feed = {"input_ids": rows, "attention_mask": np.ones_like(rows), "position_ids": np.tile(np.arange(12), (2, 1))}
    feed |= {i.name: np.zeros((2, 8, 0, 16), np.float32) for i in model.graph.input if i.name.startswith("past")}
    return [feed]


@pytest.mark.parametrize(("precision", "mode"), [("int8", "dynamic"), ("int8", "static"), ("int4", "dynamic")])
def test_a_pass_reports_what_it_reduced_and_what_it_kept(edge_bundle, tmp_path, precision, mode):
    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    feeds = _feeds(model)
    step = pass_for(precision, mode, "minmax")
    loose = step.run(model, tmp_path / "loose.onnx", feeds, {"cosine": 0.5}, language_model=True)
    assert loose.modified and loose.kept_in_float == [] and loose.float_weight_bytes == 0
    assert sorted(loose.reduced) == sorted(loose.candidates) and len(loose.candidates) >= 8
    tight = step.run(model, tmp_path / "tight.onnx", feeds, {"cosine": 1.0}, language_model=True)
    # no reduced graph equals the float one exactly: the search keeps every candidate, none reduced
    kept = [k["node"] for k in tight.search.kept_in_float]
    assert sorted(kept) == sorted(tight.candidates) and tight.reduced == []
    if precision == "int4":  # kept at 8 bits, not float; the pass checks the written graph against the report
        assert tight.kept_in_float == [] and tight.float_weight_bytes == 0
        assert loose.entry == {"int4_nodes": loose.reduced, "int8_nodes": [], "kept_at_8_bits": [], "kept_in_float": []}
        assert tight.entry["int4_nodes"] == [] and tight.entry["int8_nodes"] == kept
        layout = weights.int4_layout(onnx.load(str(tmp_path / "tight.onnx")).graph, tight.candidates)
        assert set(layout.values()) == {"int8"}
    else:
        assert sorted(tight.kept_in_float) == sorted(kept) and tight.float_weight_bytes > 0
        assert loose.entry == {}


def test_fp16_has_no_candidates_and_changes_the_whole_graph(edge_bundle, tmp_path):
    model = int8.name_nodes(onnx.load(str(edge_bundle("gpt-mini") / "model.onnx")))
    result = pass_for("fp16", "dynamic", "minmax").run(
        model, tmp_path / "h.onnx", _feeds(model), {"cosine": 0.99}, language_model=True
    )
    assert result.candidates == [] and result.reduced == [] and result.modified
    assert onnx.load(str(tmp_path / "h.onnx")).graph.initializer[0].data_type == onnx.TensorProto.FLOAT16


def test_the_report_says_what_the_pass_declares(edge_bundle, tmp_path):
    manifest = stage.quantize_bundle(edge_bundle("gpt-mini"), tmp_path / "q", precision="int4", samples=4)
    report, step = manifest["quantization"], pass_for("int4", "dynamic", "minmax")
    assert (report["precision"], report["mode"], report["method"]) == ("int4", "weight-only", None)
    assert report["settings"] == step.settings() and "int4_nodes" in report["graphs"]["model"]
    assert manifest["target"]["precision"] == "int4" and manifest["target"]["name"].endswith("-int4")
    assert "parity" not in manifest and manifest["precision"] == "int4"

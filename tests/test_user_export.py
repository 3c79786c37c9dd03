"""A user's own nn.Module, and Hugging Face models, through the same export path."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from edgeformer.cli import main
from edgeformer.errors import ExportError
from edgeformer.export.source import source_from_factory
from edgeformer.export.user import parse_io
from edgeformer.pipeline import export_bundle
from edgeformer.verify_bundle import check_bundle
from edgeformer.zoo import resolve_target

CPU = resolve_target("cpu-fp32")
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers (a test-only dependency) is not installed"
)


def test_user_module_exports_and_checks(tmp_path):
    manifest = export_bundle(source_from_factory("fixtures.factories:tiny_tagger"), CPU, tmp_path / "b")
    outs = {o["name"]: o["shape"] for o in manifest["graphs"]["model"]["outputs"]}
    assert outs == {"tags": ["batch", "sequence", 3], "summary": ["batch", 16]}
    assert manifest["parity"]["ok"] and manifest["family"] == "custom"
    assert manifest["source"] == {
        "kind": "factory",
        "factory": "fixtures.factories:tiny_tagger",
        "io": manifest["source"]["io"],
        "seed": 0,
    }
    dims = [c["dims"] for c in manifest["parity"]["cases"]]
    assert {"batch": 1, "sequence": 1, "total_sequence": 1} in dims and any(d["sequence"] == 32 for d in dims)
    report = check_bundle(tmp_path / "b", factory="fixtures.factories:tiny_tagger")  # the user names the code
    assert report.ok and report.torch_parity == "checked"


@needs_transformers
@pytest.mark.parametrize(
    ("factory", "outputs"),
    [
        ("hf_bert", {"last_hidden_state": ["batch", "sequence", 64], "pooler_output": ["batch", 64]}),
        ("hf_gpt2", {"logits": ["batch", "sequence", 200]}),
    ],
)
def test_hugging_face_models_export_with_parity(tmp_path, factory, outputs):
    manifest = export_bundle(source_from_factory(f"fixtures.factories:{factory}"), CPU, tmp_path / "b")
    assert {o["name"]: o["shape"] for o in manifest["graphs"]["model"]["outputs"]} == outputs
    parity = manifest["parity"]
    assert parity["ok"] and parity["worst_max_rel"] <= 1e-4 and len(parity["cases"]) == 6


def test_cli_export_with_io_file(tmp_path):
    io = tmp_path / "io.toml"
    io.write_text(
        'outputs = ["summary"]\n'
        '[inputs.tokens]\ndtype = "int64"\nshape = ["batch", "sequence"]\nhigh = 50\n'
        '[inputs.weights]\ndtype = "float32"\nshape = ["batch", "sequence"]\n'
        "[dims]\nsequence = 16\n"
    )
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["export", "fixtures.factories:tiny_tagger", "--io", str(io), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fixtures.factories:nothing", "has no callable 'nothing'"),
        ("no_such_package.mod:f", "cannot import 'no_such_package.mod'"),
        ("fixtures.factories:broken", "factory fixtures.factories:broken failed: RuntimeError: no weights here"),
        ("fixtures.factories:TinyTagger", "declare its inputs"),
    ],
)
def test_bad_factories(spec, message):
    with pytest.raises(ExportError, match=message):
        source_from_factory(spec)


@pytest.mark.parametrize(
    ("io", "message"),
    [
        ({}, "must name at least one input"),
        ({"inputs": {"x": {"dtype": "int8", "shape": [1]}}}, r"\[inputs.x\].dtype 'int8'"),
        ({"inputs": {"x": {"dtype": "int64", "shape": "batch"}}}, r"\[inputs.x\].shape"),
        ({"inputs": {"x": {"dtype": "int64", "shape": [1], "range": 3}}}, "unknown key 'range'"),
        ({"inputs": {"x": {"dtype": "int64", "shape": [1]}}, "dims": {"x": 0}}, r"\[dims\]"),
        ({"inputs": {"x": {"dtype": "int64", "shape": [1]}}, "extra": 1}, "unknown key 'extra'"),
    ],
)
def test_bad_io_declarations(io, message):
    with pytest.raises(ExportError, match=message):
        parse_io(io)


def test_wrong_declared_inputs_are_named():
    io = {"inputs": {"input_ids": {"dtype": "int64", "shape": ["batch", "sequence"], "high": 50}}}
    with pytest.raises(ExportError, match="does not run on the declared inputs"):
        source_from_factory("fixtures.factories:tiny_tagger", io)


def test_factory_module_in_the_working_directory_needs_no_pythonpath(tmp_path, monkeypatch):
    """`edgeformer export mymodel:make` in the directory holding mymodel.py finds it, as `python -m`
    would; the working directory is not left on sys.path afterwards."""
    import os
    import sys

    from edgeformer.export.user import load_factory

    (tmp_path / "wd_cwd_factory.py").write_text("def make():\n    return 'made'\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    here = {"", os.getcwd(), str(tmp_path)}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in here])
    monkeypatch.delitem(sys.modules, "wd_cwd_factory", raising=False)
    assert load_factory("wd_cwd_factory:make")() == "made"
    assert str(tmp_path) not in sys.path
    monkeypatch.delitem(sys.modules, "wd_cwd_factory", raising=False)

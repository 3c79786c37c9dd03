"""Safe loading: nothing handed over as data runs as code or reads outside the bundle.

Checkpoints: a pickle whose unpickling would run a command is refused, and the command does not
run (the file it would create does not appear), through every way a checkpoint is loaded.
External data: a graph whose tensors point outside the bundle (``../``, absolute paths, links
that lead out) or at a file the manifest does not list is refused by the runtime loader, by
``edgeformer check`` and by ``edgeformer fuse`` -- before onnxruntime or onnx opens the graph.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from edgeformer import runtime
from edgeformer.cli import main
from edgeformer.config import render_card
from edgeformer.errors import CheckpointError
from edgeformer.io import sha256_file
from edgeformer.nn.checkpoint import load_model, read_state_dict
from edgeformer.zoo import resolve_card

# ----- checkpoints ----------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, kind: str) -> Path:
    if kind == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"w": Payload(marker)}, f)
    elif kind == "torch.save":  # the zip format torch writes, with the payload among real tensors
        torch.save({"embeddings.tokens.weight": torch.zeros(2, 2), "evil": Payload(marker)}, path)
    return path


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("suffix", [".bin", ".pt", ".safetensors"])
def test_planted_pickle_is_refused_and_not_run(tmp_path, kind, suffix):
    marker = tmp_path / "pwned"
    path = _plant(tmp_path / f"model{suffix}", marker, kind)
    with pytest.raises(CheckpointError, match="weights_only|not a readable safetensors"):
        read_state_dict(path)
    assert not marker.exists(), "the pickle's payload ran"


def test_planted_pickle_through_a_card_and_the_cli(tmp_path):
    """A card naming a malicious checkpoint: load_model and `edgeformer export` refuse it."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / "weights.bin", marker, "torch.save")
    card = resolve_card("gpt-mini")
    text = render_card(card).replace('name = "gpt-mini"', 'name = "evil"\ncheckpoint = "weights.bin"')
    (tmp_path / "evil.toml").write_text(text)
    with pytest.raises(CheckpointError, match="was refused"):
        load_model(resolve_card(tmp_path / "evil.toml"))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "evil.toml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "was refused: only plain tensors load" in result.output
    assert "Traceback" not in result.output
    assert not marker.exists() and not (tmp_path / "out").exists()


# ----- ONNX external data ---------------------------------------------------------------------------


def _externalize(bundle: Path, location: str = "model.onnx.data", listed: bool = True) -> None:
    """Move model.onnx's weights to ``location`` (relative to the bundle), updating the manifest."""
    model = onnx.load(bundle / "model.onnx")
    data = bundle / location
    data.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, bundle / "model.onnx", save_as_external_data=True, location=location)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(bundle / "model.onnx")
    if listed:
        manifest["files"][location] = sha256_file(data)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _point_at(bundle: Path, location: str) -> None:
    """Rewrite every external-data location of model.onnx (the sha256 in the manifest follows)."""
    model = onnx.load(bundle / "model.onnx", load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (bundle / "model.onnx").write_bytes(model.SerializeToString())
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def external(edge_bundle, tmp_path):
    """A copy of bert-mini with its weights in model.onnx.data, and a secret file beside it."""
    bundle = tmp_path / "bundle"
    shutil.copytree(edge_bundle("bert-mini"), bundle)
    _externalize(bundle)
    (tmp_path / "secret.bin").write_bytes((bundle / "model.onnx.data").read_bytes())  # a well-formed target
    return bundle


@pytest.fixture
def opened(monkeypatch):
    """Records every graph onnxruntime or onnx/onnx_ir is asked to open."""
    import onnx_ir
    import onnxruntime

    calls: list[str] = []
    real_session, real_ir_load, real_onnx_load = onnxruntime.InferenceSession, onnx_ir.load, onnx.load

    def session(path, *args, **kwargs):
        calls.append(f"onnxruntime {path}")
        return real_session(path, *args, **kwargs)

    def ir_load(path, *args, **kwargs):
        calls.append(f"onnx_ir {path}")
        return real_ir_load(path, *args, **kwargs)

    def onnx_load(path, *args, **kwargs):
        calls.append(f"onnx {path}")
        return real_onnx_load(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    monkeypatch.setattr(onnx_ir, "load", ir_load)
    monkeypatch.setattr(onnx, "load", onnx_load)
    return calls


def test_external_data_inside_the_bundle_loads(external, edge_bundle):
    ids = np.arange(1, 9, dtype=np.int64)[None]
    want = runtime.load(edge_bundle("bert-mini"), spinning=False).encode(ids)["last_hidden_state"]
    model = runtime.load(external, spinning=False)
    assert model.bundle.manifest["files"].keys() >= {"model.onnx", "model.onnx.data"}
    np.testing.assert_array_equal(model.encode(ids)["last_hidden_state"], want)


def _escape(bundle: Path, how: str) -> str:
    secret = bundle.parent / "secret.bin"
    if how == "parent":
        location = "../secret.bin"
    elif how == "absolute":
        location = str(secret.resolve())
    elif how == "dotdot inside":
        location = "sub/../../secret.bin"
    elif how == "link":
        (bundle / "link.data").symlink_to(secret)
        location = "link.data"
    elif how == "unlisted":
        shutil.copy(bundle / "model.onnx.data", bundle / "extra.data")
        location = "extra.data"
    else:
        location = "nothing-here.data"
    _point_at(bundle, location)
    return location


ESCAPES = {
    "parent": "outside",
    "absolute": "outside",
    "dotdot inside": "outside",
    "link": "outside",
    "unlisted": "manifest.json does not list",
    "missing": "which is missing",
}


@pytest.mark.parametrize("how", list(ESCAPES))
def test_runtime_refuses_external_data_outside_the_bundle(external, opened, how):
    location = _escape(external, how)
    opened.clear()  # (the test's own edit of the graph)
    with pytest.raises(runtime.BundleIntegrityError, match=ESCAPES[how]) as err:
        runtime.load(external)
    assert repr(location) in str(err.value)
    if how != "unlisted":  # even without the sha256 checks
        with pytest.raises(runtime.BundleIntegrityError, match=ESCAPES[how]):
            runtime.load(external, verify=False)
    assert opened == [], "onnxruntime or onnx was handed the graph"


@pytest.mark.parametrize("how", ["parent", "absolute", "link", "unlisted"])
def test_check_and_fuse_refuse_external_data_outside_the_bundle(external, opened, how, tmp_path):
    _escape(external, how)
    opened.clear()  # (the test's own edit of the graph)
    runner = CliRunner()
    for args in (
        ["check", str(external)],
        ["fuse", str(external), "-o", str(tmp_path / "fused")],
        ["fuse", str(external / "model.onnx"), "-o", str(tmp_path / "fused.onnx")],
    ):
        if how == "unlisted" and args[1].endswith(".onnx"):
            continue  # a lone .onnx file has no manifest: a file beside it is its own
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert ESCAPES[how] in result.output and "Traceback" not in result.output
    assert opened == [], "onnxruntime or onnx was handed the graph"
    assert not (tmp_path / "fused").exists() and not (tmp_path / "fused.onnx").exists()

"""Issue 18, "code execution": a bundle from a stranger is data, never code.

Each test builds the hostile bundle itself: a manifest whose source names a module planted in the
bundle, an edited manifest, a manifest that is not a file, a graph whose tensors read outside the
bundle through a function's default attribute, a graph swapped on disk after its check."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgeformer import runtime
from edgeformer.cli import main
from edgeformer.io import sha256_file
from edgeformer.runtime.bundle import read_bundle, stamp_manifest

PAYLOAD = """
from pathlib import Path
Path({marker!r}).write_text("payload ran")

def make():
    Path({marker!r}).write_text("payload factory ran")
    raise SystemExit(0)
"""


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _edit(bundle: Path, change, *, stamp: bool = True) -> None:  # noqa: ANN001
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    if stamp:  # an attacker recomputes manifest.sha256: only a pinned digest tells
        stamp_manifest(bundle)


def _factory_bundle(edge_bundle, tmp_path: Path, factory: str) -> tuple[Path, Path]:
    """bert-mini whose manifest says its source is ``factory``, with payload.py and conftest.py
    planted in the bundle; returns the bundle and the marker file the payload would write."""
    marker = tmp_path / "marker.txt"
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "bundle")
    (bundle / "payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    (bundle / "conftest.py").write_text(PAYLOAD.format(marker=str(marker)))
    io = {"inputs": {"x": {"dtype": "float32", "shape": ["batch", 4]}}}
    _edit(bundle, lambda m: m.update(source={"kind": "factory", "factory": factory, "io": io, "seed": 0}))
    return bundle, marker


@pytest.mark.parametrize("factory", ["payload:make", "pytest:main", "sys:exit"])
def test_check_never_imports_the_factory_a_bundle_names(edge_bundle, tmp_path, monkeypatch, factory):
    bundle, marker = _factory_bundle(edge_bundle, tmp_path, factory)
    monkeypatch.chdir(bundle)  # as `python -m edgeformer.cli check .` run inside the bundle
    monkeypatch.syspath_prepend(str(bundle))
    result = CliRunner().invoke(main, ["check", ".", "--json"])
    assert result.exit_code == 0, result.output
    assert not marker.exists(), "code named by the bundle ran"
    assert "payload" not in sys.modules
    report = json.loads(result.output[result.output.index("{") :])
    assert report["torch_parity"] == "not checked" and report["ok"]
    assert report["checks"] == {
        "files": "ok",
        "io spec": "ok",
        "graphs run, outputs finite": "ok",
        "recorded parity": "none recorded (exported with --no-check)",
    }
    assert f"the torch source is user code ({factory}); pass --factory {factory} to run it" in report["why"]
    plain = CliRunner().invoke(main, ["check", "."])
    assert plain.exit_code == 0 and "torch parity NOT checked" in plain.output
    gate = CliRunner().invoke(main, ["check", ".", "--require-torch-parity"])
    assert gate.exit_code == 1 and "torch parity NOT checked" in gate.output and "Traceback" not in gate.output
    assert not marker.exists()


@pytest.mark.parametrize("factory", ["payload:make", "os:abort"])
def test_check_in_a_fresh_process_inside_the_bundle(edge_bundle, tmp_path, factory):
    """``python -m`` puts the working directory first on sys.path: payload.py would be importable."""
    bundle, marker = _factory_bundle(edge_bundle, tmp_path, factory)
    done = subprocess.run(
        [sys.executable, "-m", "edgeformer.cli", "check", "."], cwd=bundle, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "torch parity NOT checked" in done.stdout + done.stderr
    assert not marker.exists()


def test_a_named_factory_that_exits_is_a_failure_not_a_pass(edge_bundle, tmp_path):
    bundle, _ = _factory_bundle(edge_bundle, tmp_path, "sys:exit")
    result = CliRunner().invoke(main, ["check", str(bundle), "--factory", "sys:exit"])
    assert result.exit_code == 1
    assert "factory sys:exit failed: SystemExit" in result.output and "Traceback" not in result.output


def test_bench_never_imports_code_from_the_bundle_or_the_working_directory(edge_bundle, tmp_path, monkeypatch):
    bundle, marker = _factory_bundle(edge_bundle, tmp_path, "payload:make")
    for planted in ("numpy.py", "onnxruntime.py"):  # what the worker imports first
        (bundle / planted).write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.chdir(bundle)
    args = ["bench", ".", "--repeats", "1", "--threads", "1", "--sequence", "8", "--warmup", "0"]
    result = CliRunner().invoke(main, [*args, "--iterations", "1", "--no-limits", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "torch eager left out" in result.output and "user code" in result.output
    assert not marker.exists(), "a worker imported code from the bundle"
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [r["variant"] for r in runs] == ["bundle"]


def test_a_factory_bundle_is_rebuilt_only_when_the_user_names_the_factory(tmp_path):
    from edgeformer.export.source import source_from_factory
    from edgeformer.pipeline import export_bundle
    from edgeformer.verify_bundle import check_bundle
    from edgeformer.zoo import resolve_target

    export_bundle(source_from_factory("fixtures.factories:tiny_tagger"), resolve_target("cpu-fp32"), tmp_path / "b")
    lines: list[str] = []
    report = check_bundle(tmp_path / "b", factory="fixtures.factories:tiny_tagger", log=lines.append)
    assert report.ok and report.torch_parity == "checked" and not any("note" in line for line in lines)
    alone = check_bundle(tmp_path / "b")
    assert alone.ok and alone.torch_parity == "not checked" and alone.checks["recorded parity"] == "ok"


# ----- the manifest is covered by the integrity check ------------------------------------------------


def test_the_manifest_digest_is_sha256sum_of_its_bytes(edge_bundle):
    bundle = edge_bundle("bert-mini")
    line = (bundle / "manifest.sha256").read_text()
    assert line == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest() + "  manifest.json\n"
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "-c", "manifest.sha256"], cwd=bundle, capture_output=True).returncode == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(source={"kind": "factory", "factory": "payload:make"}),
        lambda m: m.update(name="renamed"),
        lambda m: m["config"].update(vocab_size=m["config"]["vocab_size"] + 1),
    ],
)
def test_an_edited_manifest_is_refused(edge_bundle, tmp_path, change):
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    _edit(bundle, change, stamp=False)
    with pytest.raises(
        runtime.BundleIntegrityError, match=r"manifest.json does not match its sha256 in manifest.sha256"
    ):
        runtime.load(bundle)
    result = CliRunner().invoke(main, ["check", str(bundle)])
    assert result.exit_code == 1 and "edited or corrupted" in result.output and "Traceback" not in result.output


def test_a_pinned_digest_catches_a_restamped_forgery(edge_bundle, tmp_path):
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    pinned = (bundle / "manifest.sha256").read_text().split()[0]
    runtime.load(bundle, expect_manifest_sha256=pinned.upper())
    _edit(bundle, lambda m: m.update(name="forged"))  # manifest.sha256 rewritten to match
    with pytest.raises(runtime.BundleIntegrityError, match="not the bundle whose digest you were given"):
        runtime.load(bundle, expect_manifest_sha256=pinned)
    with pytest.raises(runtime.BundleIntegrityError, match="not 64 hex digits"):
        runtime.load(bundle, expect_manifest_sha256="abc")
    with pytest.raises(runtime.OptionError, match="needs verify=True"):
        runtime.load(bundle, expect_manifest_sha256=pinned, verify=False)
    result = CliRunner().invoke(main, ["check", str(bundle), "--expect-sha256", pinned])
    assert result.exit_code == 1 and "not the bundle whose digest you were given" in result.output


def test_a_bundle_without_digest_still_loads_and_checks_with_a_warning(edge_bundle, tmp_path):
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    (bundle / "manifest.sha256").unlink()  # as written by edgeformer 0.1
    with pytest.warns(runtime.UnverifiedManifestWarning, match="edits of the manifest itself cannot be detected"):
        model = runtime.load(bundle)
    assert model.encode(np.array([[1, 2, 3]]))["last_hidden_state"].shape[:2] == (1, 3)
    result = CliRunner().invoke(main, ["check", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "NO manifest.sha256" in result.output


def _hostile_manifest(bundle: Path, kind: str) -> None:
    path = bundle / "manifest.json"
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "dev zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "nested":
        path.write_text("[" * 10_000 + "]" * 10_000)
    elif kind == "not utf-8":
        path.write_bytes(b'{"name": "\xff\xfe"}')
    else:  # 100 MB of spaces
        with open(path, "wb") as f:
            for _ in range(100):
                f.write(b" " * (1 << 20))
    if path.is_file():
        stamp_manifest(bundle)  # the reader itself must cope, not only the digest


MANIFEST_KINDS = {
    "directory": "is a directory",
    "dev zero": "is a device",
    "fifo": "is a FIFO",
    "nested": "nests deeper than 64 levels",
    "not utf-8": "not valid JSON",
    "huge": "more than the 16,777,216",
}


@pytest.mark.parametrize("kind", list(MANIFEST_KINDS))
def test_a_manifest_that_is_not_a_small_json_file_is_refused_in_time(edge_bundle, tmp_path, kind):
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    _hostile_manifest(bundle, kind)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.append(_raises(lambda: read_bundle(bundle))), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "reading the manifest hangs"
    assert isinstance(outcome[0], runtime.BundleFormatError), outcome
    assert MANIFEST_KINDS[kind] in str(outcome[0])
    result = CliRunner().invoke(main, ["check", str(bundle)])
    assert result.exit_code == 1 and MANIFEST_KINDS[kind] in result.output and "Traceback" not in result.output


def _raises(call) -> BaseException | None:  # noqa: ANN001
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects what was raised
        return exc
    return None


# ----- hash what you load -----------------------------------------------------------------------------


def _scaled(graph: Path, out: Path, factor: float) -> None:
    """The graph with every float initializer scaled: same inputs and outputs, other numbers."""
    model = onnx.load(graph)
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            array = onnx.numpy_helper.to_array(tensor) + factor
            tensor.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), tensor.name))
    out.write_bytes(model.SerializeToString())


def _swap_after_check(monkeypatch, swap) -> None:  # noqa: ANN001
    """Run ``swap`` between the sha256 check and the creation of the sessions."""
    from edgeformer.runtime import loader

    real = loader.read_bundle

    def checked_then_swapped(*args, **kwargs):
        bundle = real(*args, **kwargs)
        swap()
        return bundle

    monkeypatch.setattr(loader, "read_bundle", checked_then_swapped)


def test_a_graph_swapped_after_its_check_is_not_what_runs(edge_bundle, tmp_path, monkeypatch):
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    ids = np.array([[5, 6, 7, 8]])
    want = runtime.load(bundle).encode(ids)["last_hidden_state"]
    _scaled(bundle / "model.onnx", tmp_path / "other.onnx", 3.0)
    _swap_after_check(monkeypatch, lambda: os.replace(tmp_path / "other.onnx", bundle / "model.onnx"))
    got = runtime.load(bundle).encode(ids)["last_hidden_state"]
    np.testing.assert_array_equal(got, want)
    monkeypatch.undo()
    with pytest.raises(runtime.BundleIntegrityError, match="model.onnx does not match its sha256"):
        runtime.load(bundle)  # the swapped file is on disk, and refused from now on


def test_external_data_swapped_after_its_check_is_not_what_runs(edge_bundle, tmp_path, monkeypatch):
    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    model = onnx.load(bundle / "model.onnx")
    onnx.save_model(model, bundle / "model.onnx", save_as_external_data=True, location="model.onnx.data")
    _edit(bundle, lambda m: m["files"].update({n: sha256_file(bundle / n) for n in ("model.onnx", "model.onnx.data")}))
    ids = np.array([[5, 6, 7, 8]])
    want = runtime.load(edge_bundle("bert-mini")).encode(ids)["last_hidden_state"]
    data = bytearray((bundle / "model.onnx.data").read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # half the weights zeroed
    (tmp_path / "other.data").write_bytes(data)
    _swap_after_check(monkeypatch, lambda: os.replace(tmp_path / "other.data", bundle / "model.onnx.data"))
    loaded = runtime.load(bundle)
    np.testing.assert_array_equal(loaded.encode(ids)["last_hidden_state"], want)


# ----- external data through a function's default attribute --------------------------------------------


def _function_default_model(location: str) -> onnx.ModelProto:
    """y = f(), where local function f is Constant(value=@value) and the default of its attribute
    ``value`` (FunctionProto.attribute_proto, field 11) is a tensor stored at ``location``."""
    h = onnx.helper
    tensor = h.make_tensor("w", onnx.TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    constant = h.make_node("Constant", [], ["c"])
    ref = constant.attribute.add()
    ref.name, ref.ref_attr_name, ref.type = "value", "value", onnx.AttributeProto.TENSOR
    function = h.make_function("local", "f", [], ["c"], [constant], [h.make_opsetid("", 18)])
    function.attribute_proto.append(h.make_attribute("value", tensor))
    graph = h.make_graph(
        [h.make_node("f", [], ["y"], domain="local")], "g", [], [h.make_tensor_value_info("y", 1, [1])]
    )
    return h.make_model(graph, functions=[function], opset_imports=[h.make_opsetid("", 18), h.make_opsetid("local", 1)])


def _custom_bundle(bundle: Path, location: str, listed: tuple[str, ...] = ()) -> None:
    bundle.mkdir(exist_ok=True)
    (bundle / "model.onnx").write_bytes(_function_default_model(location).SerializeToString())
    (bundle / "inside.bin").write_bytes(np.array([7.0], dtype=np.float32).tobytes())
    spec = {"name": "y", "dtype": "float32", "shape": [1]}
    manifest = {
        "format_version": 1,
        "family": "custom",
        "graphs": {"model": {"file": "model.onnx", "inputs": [], "outputs": [spec]}},
        "files": {name: sha256_file(bundle / name) for name in ("model.onnx", *listed)},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(bundle)


def _outward(tmp_path: Path, how: str) -> str:
    secret = tmp_path / "outside.bin"
    secret.write_bytes(np.array([42.0], dtype=np.float32).tobytes())
    if how == "parent":
        return "../outside.bin"
    if how == "absolute":
        return str(secret)
    if how == "link":
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "link.bin").symlink_to(secret)
        return "link.bin"
    if how == "memory address":
        return "*/_ORT_MEM_ADDR_/*"
    return "inside.bin"  # unlisted


FUNCTION_ESCAPES = {
    "parent": "outside",
    "absolute": "outside",
    "link": "outside",
    "unlisted": "manifest.json does not list",
    "memory address": "raw memory address",
}


@pytest.mark.parametrize("how", list(FUNCTION_ESCAPES))
def test_external_data_of_a_function_default_is_checked(tmp_path, how, monkeypatch):
    import onnxruntime

    location = _outward(tmp_path, how)
    bundle = tmp_path / "b"
    _custom_bundle(bundle, location)
    opened: list[object] = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a))
    with pytest.raises(runtime.BundleIntegrityError, match=FUNCTION_ESCAPES[how]) as err:
        runtime.load(bundle)
    assert repr(location) in str(err.value)
    assert opened == [], "onnxruntime was handed the graph"
    if how == "unlisted":
        return  # a lone .onnx file has no manifest: a file beside it is its own
    result = CliRunner().invoke(main, ["fuse", str(bundle / "model.onnx"), "-o", str(tmp_path / "fused.onnx")])
    assert result.exit_code == 1 and FUNCTION_ESCAPES[how] in result.output, result.output
    assert not (tmp_path / "fused.onnx").exists()
    assert opened == [], "onnxruntime was handed the graph"


def test_listed_external_data_of_a_function_default_is_not_opened_by_path(tmp_path, monkeypatch):
    """onnxruntime takes external data from memory for initializers only: a function default's
    would be opened by path after the check, so load refuses it (before onnxruntime sees it)."""
    import onnxruntime

    _custom_bundle(tmp_path / "b", "inside.bin", listed=("inside.bin",))
    opened: list[object] = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a))
    with pytest.raises(runtime.BundleFormatError, match="initializers only"):
        runtime.load(tmp_path / "b")
    assert opened == []


def test_a_manifest_naming_a_directory_loads_nothing_from_it_unless_its_weights_match(tmp_path, monkeypatch):
    """A "huggingface" source names a directory on the receiver's machine: its weight files are
    hashed and compared before any is loaded or a model is built."""
    import edgeformer.importers as importers
    from edgeformer.errors import BundleError

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"\0" * 64)
    loaded: list[object] = []
    monkeypatch.setattr(importers, "import_directory", lambda *a, **k: loaded.append(a))
    recipe = {"kind": "huggingface", "directory": str(tmp_path / "hf"), "weights_sha256": {"model.safetensors": "0"}}
    with pytest.raises(BundleError, match="changed since the bundle was exported"):
        importers.rebuild_source(recipe)
    assert loaded == []


def test_check_judges_the_graph_it_verified_not_one_swapped_in_meanwhile(edge_bundle, tmp_path, monkeypatch):
    import edgeformer.verify_bundle as verify_bundle
    from edgeformer.verify_bundle import check_bundle

    bundle = _copy(edge_bundle("bert-mini"), tmp_path / "b")
    _scaled(bundle / "model.onnx", tmp_path / "other.onnx", 3.0)
    real = verify_bundle.check_source
    swaps = []

    def swapped_then_checked(*args, **kwargs):  # between the sha256 check and the sessions
        os.replace(tmp_path / "other.onnx", bundle / "model.onnx")
        swaps.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(verify_bundle, "check_source", swapped_then_checked)
    report = check_bundle(bundle, generation_steps=2)
    assert swaps, "the swap must happen between the hash check and the sessions, or the test proves nothing"
    assert report.ok and report.torch_parity == "checked"
    assert (bundle / "model.onnx").read_bytes() != (edge_bundle("bert-mini") / "model.onnx").read_bytes()

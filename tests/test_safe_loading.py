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
from edgeformer.runtime.bundle import stamp_manifest
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


def test_planted_pickle_through_edgeformer_import(tmp_path):
    """A Hugging Face directory whose pytorch_model.bin carries the payload."""
    if "import" not in main.commands:
        pytest.skip("`edgeformer import` is not in this checkout")
    marker, directory = tmp_path / "pwned", tmp_path / "bert"
    directory.mkdir()
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 100, "hidden_size": 32}
    config |= {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config |= {"max_position_embeddings": 64, "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    (directory / "config.json").write_text(json.dumps(config))
    _plant(directory / "pytorch_model.bin", marker, "torch.save")
    result = CliRunner().invoke(main, ["import", str(directory), "-o", str(tmp_path / "card.toml")])
    assert result.exit_code == 1 and "was refused: only plain tensors load" in result.output, result.output
    assert not marker.exists() and not (tmp_path / "card.toml").exists()


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
    stamp_manifest(bundle)  # the digest follows the edit


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
    stamp_manifest(bundle)  # the digest follows the edit


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


# ----- the external-data reader reaches every tensor ------------------------------------------------


def _external_tensor(name: str, location: str) -> onnx.TensorProto:
    tensor = onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _graph_with(where: str, location: str) -> onnx.ModelProto:
    """A model whose one external tensor sits in an initializer, a Constant's attribute, the then
    branch of an If, a sparse initializer or a function."""
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    tensor = _external_tensor("w", location)
    nodes, inits, sparse, functions = [h.make_node("Identity", ["x"], ["y"])], [], [], []
    if where == "initializer":
        inits = [tensor]
    elif where == "constant":
        nodes.append(h.make_node("Constant", [], ["c"], value=tensor))
    elif where == "subgraph":
        branch = h.make_graph([h.make_node("Identity", ["w"], ["b"])], "then", [], [y], [tensor])
        other = h.make_graph([h.make_node("Identity", ["x"], ["b"])], "else", [], [y])
        nodes.append(h.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=other))
    elif where == "sparse":
        indices = h.make_tensor("i", onnx.TensorProto.INT64, [1], [0])
        sparse = [h.make_sparse_tensor(tensor, indices, [4])]
    elif where == "function":
        body = [h.make_node("Constant", [], ["c"], value=tensor)]
        functions = [h.make_function("local", "f", [], ["c"], body, [h.make_opsetid("", 18)])]
    graph = h.make_graph(nodes, "g", [x], [y], inits, sparse_initializer=sparse)
    return h.make_model(graph, functions=functions, opset_imports=[h.make_opsetid("", 18)])


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph", "sparse", "function"])
def test_external_data_is_found_wherever_a_tensor_can_be(tmp_path, where):
    from edgeformer.runtime.bundle import check_external_data
    from edgeformer.runtime.onnxfile import external_refs

    (tmp_path / "inside.data").write_bytes(b"\0" * 4)
    path = tmp_path / "model.onnx"
    path.write_bytes(_graph_with(where, "inside.data").SerializeToString())
    assert [(r.tensor, r.location) for r in external_refs(path)] == [("w", "inside.data")]
    assert check_external_data(tmp_path, path, {"model.onnx", "inside.data"}) == ["inside.data"]
    path.write_bytes(_graph_with(where, "../outside.data").SerializeToString())
    with pytest.raises(runtime.BundleIntegrityError, match="outside"):
        check_external_data(tmp_path, path)


def test_malformed_graphs_are_named_not_crashed_on(tmp_path):
    from edgeformer.runtime.bundle import check_external_data

    data = _graph_with("subgraph", "inside.data").SerializeToString()
    path = tmp_path / "model.onnx"
    for broken in (data[: len(data) // 2], b"", b"\x3a\xff\xff\xff\x0f", b"\xff" * 11, b"\x0b\x0c"):
        path.write_bytes(broken)
        with pytest.raises(runtime.BundleFormatError, match="not a valid ONNX file"):
            check_external_data(tmp_path, path)

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
        length, size = b"", len(payload)
        while True:
            length += bytes([(size & 0x7F) | (0x80 if size > 0x7F else 0)])
            size >>= 7
            if not size:
                return bytes([number << 3 | 2]) + length + payload

    deep = b""
    for _ in range(70):  # graphs nested 70 deep (node -> attribute -> graph): refused, no recursion error
        deep = field(1, field(5, field(6, deep)))
    path.write_bytes(field(7, deep))  # ModelProto.graph
    with pytest.raises(runtime.BundleFormatError, match="nested deeper than 64"):
        check_external_data(tmp_path, path)

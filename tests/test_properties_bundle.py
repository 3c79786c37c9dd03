"""Property-based: damaged bundles through ``runtime.load``, ``edgeformer check`` and ``edgeformer fuse``.

Graph files truncated, overwritten in places, replaced by random bytes or emptied (with the
manifest's sha256 left alone, or updated so the damage reaches the ONNX parser); listed files
deleted, unlisted ones added; manifest.json damaged as text (truncated, random or non-UTF-8 bytes)
or as data (any key deleted or given a value of another type). The runtime loader must return a
model or raise RuntimeBundleError; the commands must exit 0, 1 or 2 with a message, never with a
traceback.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from props import CASES, PASSED, fuzz, outcome

from edgeformer import runtime
from edgeformer.cli import main
from edgeformer.io import sha256_file
from edgeformer.runtime.bundle import stamp_manifest

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=5,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) into a JSON value."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


KINDS = ["graph bytes", "graph bytes", "file", "manifest value", "manifest value", "manifest text"]
TOOL_KINDS = ["graph bytes", "file", "manifest value", "manifest value", "manifest value", "manifest text"]


@st.composite
def damage(draw: st.DrawFn, manifest: dict, kinds: list[str]) -> tuple:
    """One way to damage a bundle, as data: (kind, details)."""
    kind = draw(st.sampled_from(kinds))
    if kind == "graph bytes":
        how = draw(st.sampled_from(["truncate", "overwrite", "random", "empty"]))
        return kind, (how, draw(st.integers(0, 2**31)), draw(st.booleans()))  # (how, seed, update the sha256)
    if kind == "file":
        return kind, (draw(st.sampled_from(["delete", "unlisted", "directory"])), draw(st.integers(0, 2**31)))
    if kind == "manifest value":  # top-level keys and their children most often: what readers read first
        paths = _paths(manifest)
        depth = draw(st.sampled_from([1, 1, 1, 2, 2, 3]))
        path = draw(st.sampled_from([p for p in paths if len(p) == depth] or paths))
        return kind, (path, draw(st.sampled_from(["delete", "replace"])), draw(json_values))
    return kind, (draw(st.sampled_from(["truncate", "random", "latin-1", "empty"])), draw(st.integers(0, 2**31)))


def _apply(bundle: Path, kind: str, details: tuple) -> None:
    import random

    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    graphs = sorted(manifest["files"])
    if kind == "graph bytes":
        how, seed, fix_sha = details
        rng = random.Random(seed)
        name = rng.choice(graphs)
        data = bytearray((bundle / name).read_bytes())
        if how == "truncate":
            data = data[: rng.randrange(len(data))]
        elif how == "overwrite":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == "random":
            data = bytearray(rng.randbytes(rng.randint(1, 4096)))
        else:
            data = bytearray()
        (bundle / name).write_bytes(bytes(data))
        if fix_sha:
            manifest["files"][name] = sha256_file(bundle / name)
            manifest_path.write_text(json.dumps(manifest))
    elif kind == "file":
        how, seed = details
        name = random.Random(seed).choice(graphs)
        if how == "delete":
            (bundle / name).unlink()
        elif how == "unlisted":
            (bundle / "extra.onnx").write_bytes(b"not listed")
        else:
            (bundle / name).unlink()
            (bundle / name).mkdir()
    elif kind == "manifest value":
        path, how, value = details
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        manifest_path.write_text(json.dumps(manifest))
    else:
        how, seed = details
        rng = random.Random(seed)
        text = manifest_path.read_bytes()
        manifest_path.write_bytes(
            {
                "truncate": text[: rng.randrange(len(text))],
                "random": rng.randbytes(rng.randint(1, 300)),
                "latin-1": text.replace(b'"name"', b'"n\xe4me"', 1),
                "empty": b"",
            }[how]
        )
    stamp_manifest(bundle)  # the digest follows the edit: what is tested is the reading of the fields


@pytest.fixture(scope="module")
def sources(edge_bundle, tmp_path_factory):
    """gpt-mini and transformer-mini; for fuse, copies whose manifests forget the fusion (so the
    command runs its passes again rather than refusing an already fused bundle)."""
    out = {"gpt-mini": edge_bundle("gpt-mini"), "transformer-mini": edge_bundle("transformer-mini")}
    root = tmp_path_factory.mktemp("unfused")
    for name in list(out):
        copy = root / name
        shutil.copytree(out[name], copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest.pop("fusions", None)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        stamp_manifest(copy)  # the digest follows the edit
        out[f"{name} for fuse"] = copy
    return out


def _damaged(source: Path, draw: st.DrawFn, kinds: list[str] = KINDS) -> tuple[tempfile.TemporaryDirectory, Path]:
    manifest = json.loads((source / "manifest.json").read_text())
    kind, details = draw(damage(manifest, kinds))
    scratch = tempfile.TemporaryDirectory(prefix="edgeformer-damaged-")
    bundle = Path(scratch.name) / "bundle"
    shutil.copytree(source, bundle)
    _apply(bundle, kind, details)
    return scratch, bundle


def _use(model: object) -> object:
    if isinstance(model, runtime.Seq2SeqModel):
        return model.generate([5, 6, 7], 2)
    if isinstance(model, runtime.DecoderModel):
        return model.generate([5, 6, 7], 2)
    return model


@fuzz(150)
@given(st.data())
def test_damaged_bundles_through_the_runtime(sources, data):
    source = sources[data.draw(st.sampled_from(["gpt-mini", "transformer-mini"]))]
    scratch, bundle = _damaged(source, data.draw)
    with scratch:
        model = outcome("damaged bundle load", lambda: runtime.load(bundle, spinning=False), runtime.RuntimeBundleError)
        if not isinstance(model, Exception):
            outcome("damaged bundle run", lambda: _use(model), runtime.RuntimeBundleError)


def _command(name: str, args: list[str]) -> None:
    CASES[name] += 1
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError(
            f"{name} {args}: {type(result.exception).__name__}: {result.exception}\n"
            + "".join(traceback.format_exception(result.exception))
        )
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert "Error:" in result.output or "Usage:" in result.output, result.output
    else:
        PASSED[name] += 1


@fuzz(20)
@given(st.data())
def test_damaged_bundles_through_check(sources, data):
    source = sources[data.draw(st.sampled_from(["gpt-mini", "transformer-mini"]))]
    scratch, bundle = _damaged(source, data.draw, TOOL_KINDS)
    with scratch:
        _command("damaged bundle check", ["check", str(bundle), "--steps", "1", "--max-sequence", "4"])


@fuzz(20)
@given(st.data())
def test_damaged_bundles_through_fuse(sources, data):
    source = sources[data.draw(st.sampled_from(["gpt-mini for fuse", "transformer-mini for fuse"]))]
    scratch, bundle = _damaged(source, data.draw, TOOL_KINDS)
    with scratch:
        _command("damaged bundle fuse", ["fuse", str(bundle), "-o", str(Path(scratch.name) / "fused")])
        graph = bundle / ("model.onnx" if (bundle / "model.onnx").exists() else "decoder.onnx")
        if graph.is_file():
            _command("damaged graph fuse", ["fuse", str(graph), "-o", str(Path(scratch.name) / "fused.onnx")])


def _small_graph() -> bytes:
    """A small model with an initializer, a Constant and an If branch, each kept in external data."""
    import onnx
    from onnx import helper as h

    def external(name: str) -> onnx.TensorProto:
        tensor = h.make_tensor(name, onnx.TensorProto.FLOAT, [1], [0.0])
        tensor.ClearField("float_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=f"{name}.data")
        return tensor

    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    branch = h.make_graph([h.make_node("Identity", ["b"], ["y"])], "then", [], [y], [external("b")])
    nodes = [
        h.make_node("Constant", [], ["c"], value=external("c")),
        h.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
    ]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])], [y], [external("a")])
    return h.make_model(graph).SerializeToString()


SMALL_GRAPH = _small_graph()


@st.composite
def graph_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(SMALL_GRAPH)
    how = draw(st.sampled_from(["truncate", "overwrite", "insert", "random"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if how == "overwrite":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:])
    return draw(st.binary(max_size=400))


@fuzz(300)
@given(graph_bytes())
def test_the_external_data_reader_on_damaged_graphs(tmp_path_factory, data):
    """The runtime's own protobuf reader: any bytes give the external references or
    MalformedProtobuf, never another error and never a hang."""
    from edgeformer.runtime.onnxfile import MalformedProtobuf, external_refs

    path = tmp_path_factory.getbasetemp() / "reader.onnx"
    path.write_bytes(data)
    refs = outcome("onnx reader", lambda: external_refs(path), MalformedProtobuf)
    if data == SMALL_GRAPH:
        assert sorted(r.location for r in refs) == ["a.data", "b.data", "b.data", "c.data"]

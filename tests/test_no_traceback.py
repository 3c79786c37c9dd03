"""Never a traceback (issue #18): every input the issue found ending in a traceback or an untyped
exception, built here, now ends in a typed error (API) or exit code 1 with a message naming the
thing (CLI). The old output of a failed write is left whole.

Covered: deeply nested TOML/JSON in cards, targets, config.json, io declarations and the
sentence-transformers files; special files (FIFO, a link to /dev/zero, a directory) in place of
each; very long file names and NUL bytes in every path argument; a read-only file system, a full
disk and /proc as the output; ``fuse FILE -o existing_dir``; ``fuse .`` and ``quantize .`` inside
a bundle; quantize of a bundle without a config or with a file in a subfolder; ``runtime.load``
of None, "" and other types; ``generate(seed=-1)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformer import runtime
from edgeformer.cli import main
from edgeformer.config import load_card, render_card
from edgeformer.errors import CardError, ExportError, ModelImportError
from edgeformer.export.user import load_io
from edgeformer.io import sha256_file
from edgeformer.quantize.calibration import CalibrationError, load_rows
from edgeformer.runtime.bundle import stamp_manifest
from edgeformer.runtime.errors import BundleFormatError, OptionError
from edgeformer.targets import load_target
from edgeformer.zoo import resolve_card

DEEP_TOML = "a = " + "[" * 5000 + "]" * 5000 + "\n"  # past Python's recursion limit
DEEPISH_TOML = "a = " + "[" * 100 + "]" * 100 + "\n"  # parses; deeper than any real card
DEEP_JSON = "[" * 100_000 + "]" * 100_000
LONG = "x" * 300  # one component longer than NAME_MAX (255)


def cli(*args: object, code: int | tuple[int, ...] = 1, says: str = "") -> str:
    """Run the CLI in-process: it must exit with ``code``, print ``says`` and no traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    codes = (code,) if isinstance(code, int) else code
    ok = result.exception is None if result.exit_code == 0 else isinstance(result.exception, SystemExit)
    assert ok, (args, repr(result.exception), result.output)
    assert result.exit_code in codes, (args, result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    assert says.lower() in result.output.lower(), (says, result.output)
    return result.output


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def zero_link(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


SPECIAL = {  # how safe_read names each
    "fifo": (fifo, "FIFO"),
    "/dev/zero link": (zero_link, "a device"),
    "directory": (lambda p: (p.mkdir(), p)[1], "directory"),
    "dangling link": (lambda p: (p.symlink_to(p.parent / "gone"), p)[1], "does not exist"),
}


# ----- nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [DEEP_TOML, DEEPISH_TOML], ids=["recursion", "depth-100"])
@pytest.mark.parametrize(
    "reader, error", [(load_card, CardError), (load_target, CardError), (load_io, ExportError)], ids=lambda x: ""
)
def test_deep_toml_is_a_typed_error(tmp_path, text, reader, error):
    path = tmp_path / "deep.toml"
    path.write_text(text)
    with pytest.raises(error, match="nests deeper than"):
        reader(path)


def test_deep_card_and_io_on_the_command_line(tmp_path):
    (tmp_path / "deep.toml").write_text(DEEP_TOML)
    cli("export", tmp_path / "deep.toml", "-o", tmp_path / "out", says="nests deeper than")
    cli("export", "gpt-mini", "-t", tmp_path / "deep.toml", "-o", tmp_path / "out", says="nests deeper than")
    cli(
        "export",
        "fixtures.factories:tiny_tagger",
        "--io",
        tmp_path / "deep.toml",
        "-o",
        tmp_path / "o",
        says="nests deeper",
    )
    assert not (tmp_path / "out").exists()


def _hf_dir(root: Path, **files: str) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name.replace("__", "/")).parent.mkdir(parents=True, exist_ok=True)
        (root / name.replace("__", "/")).write_text(text)
    return root


GPT2_CONFIG = json.dumps(  # complete, so the memory pre-check passes and the reading of the next file is what fails
    {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 16, "n_embd": 32, "n_head": 2}
    | {"n_layer": 1, "n_positions": 8}
)


def tiny_gpt2(root: Path) -> Path:
    """A Hugging Face GPT-2 directory (config.json + model.safetensors) of 1 layer, width 8, written
    by hand: ``import`` runs to the point of writing its outputs in well under a second."""
    import torch
    from safetensors.torch import save_file

    v, c, t = 16, 8, 8
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": v, "n_embd": c}
    config |= {"n_head": 2, "n_layer": 1, "n_positions": t}
    shapes = {"wte.weight": (v, c), "wpe.weight": (t, c), "ln_f.weight": (c,), "ln_f.bias": (c,)}
    for name, (d_in, d_out) in {"attn.c_attn": (c, 3 * c), "attn.c_proj": (c, c), "mlp.c_fc": (c, 4 * c)}.items():
        shapes |= {f"h.0.{name}.weight": (d_in, d_out), f"h.0.{name}.bias": (d_out,)}
    shapes |= {"h.0.mlp.c_proj.weight": (4 * c, c), "h.0.mlp.c_proj.bias": (c,)}
    shapes |= {f"h.0.{ln}.{p}": (c,) for ln in ("ln_1", "ln_2") for p in ("weight", "bias")}
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    save_file({k: torch.randn(s) for k, s in shapes.items()}, str(root / "model.safetensors"))
    return root


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": DEEP_JSON},
        {"config.json": "[" * 100 + "]" * 100},
        {"config.json": GPT2_CONFIG, "model.safetensors.index.json": DEEP_JSON},
        {"modules.json": DEEP_JSON},
        {
            "modules.json": json.dumps(
                [{"type": "sentence_transformers.models.Transformer", "path": ""}, {"type": "Pooling", "path": "1_P"}]
            ),
            "1_P__config.json": DEEP_JSON,
        },
    ],
    ids=["config", "config-depth-100", "weight-index", "modules", "pooling-config"],
)
def test_deep_json_in_a_model_directory(tmp_path, files):
    directory = _hf_dir(tmp_path / "hf", **files)
    from edgeformer.importers import import_directory

    with pytest.raises(ModelImportError, match="nests deeper than"):
        import_directory(directory)
    cli("import", directory, "-o", tmp_path / "card.toml", says="nests deeper than")
    cli("export", directory, "-o", tmp_path / "out", says="nests deeper than")
    assert not (tmp_path / "card.toml").exists()


# ----- special files in place of the files edgeformer reads -----------------------------------------


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_file_as_card_target_or_io(tmp_path, kind):
    make, says = SPECIAL[kind]
    path = make(tmp_path / "card.toml")
    for reader, error in ((load_card, CardError), (load_target, CardError), (load_io, ExportError)):
        with pytest.raises(error, match=says):
            reader(path)
    cli("export", path, "-o", tmp_path / "out", says=says)


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("name", ["config.json", "modules.json", "model.safetensors.index.json", "model.safetensors"])
def test_special_file_in_a_model_directory(tmp_path, kind, name):
    make, says = SPECIAL[kind]
    directory = _hf_dir(tmp_path / "hf", **({} if name == "config.json" else {"config.json": GPT2_CONFIG}))
    make(directory / name)
    from edgeformer.importers import import_directory

    with pytest.raises(ModelImportError) as caught:
        import_directory(directory)
    assert name in str(caught.value)
    if kind == "fifo":  # the CLI too: it must not hang on the pipe
        cli("import", directory, "-o", tmp_path / "card.toml", says=name)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero link", "directory"])
@pytest.mark.parametrize("suffix", [".npz", ".txt"])
def test_special_file_as_calibration(tmp_path, kind, suffix):
    make, _ = SPECIAL[kind]
    path = make(tmp_path / f"calib{suffix}")
    config = {"vocab_size": 256, "max_positions": 64, "pad_token_id": 0}
    with pytest.raises(CalibrationError, match="calib"):
        load_rows(config, "bytes", path=path)


def test_oversized_calibration_npz_is_refused_from_its_header(tmp_path):
    import numpy as np

    path = tmp_path / "big.npz"
    np.savez_compressed(path, input_ids=np.zeros((1 << 13, 1 << 12), dtype=np.int8))  # 32 M tokens, 32 KB on disk
    with pytest.raises(CalibrationError, match="more than"):
        load_rows({"vocab_size": 256, "max_positions": 64}, "bytes", path=path)


# ----- path names -------------------------------------------------------------------------------


def test_nul_in_file_names_is_a_typed_error(tmp_path):
    for reader, error in ((load_card, CardError), (load_target, CardError), (load_io, ExportError)):
        with pytest.raises(error, match="NUL"):
            reader(f"{tmp_path}/a\0b.toml")
    with pytest.raises(CalibrationError, match="NUL"):
        load_rows({"vocab_size": 256, "max_positions": 64}, "bytes", path=f"{tmp_path}/a\0b.txt")


def test_nul_in_a_card_name_is_a_message(tmp_path):
    """The card's name chooses the default output path: a NUL in it ends in a message."""
    card = tmp_path / "nul.toml"
    card.write_text(render_card(resolve_card("gpt-mini")).replace('name = "gpt-mini"', 'name = "gpt\\u0000mini"'))
    out = cli("export", card, "--no-check", code=1)
    assert "name" in out


def _long_cases() -> list[tuple[str, ...]]:
    long = f"{{tmp}}/{LONG}"
    return [
        ("train", long),
        ("train", "demo-decoder", "--steps", "1", "--out-dir", long),
        ("import", long),
        ("import", "{hf}", "-o", f"{long}.toml"),
        ("export", f"{long}.toml"),
        ("export", long),
        ("export", "gpt-mini", "-t", f"{long}.toml"),
        ("export", "gpt-mini", "--no-check", "-o", long),
        ("export", "fixtures.factories:tiny_tagger", "--io", f"{long}.toml", "-o", "{tmp}/o"),
        ("export", "gpt-mini", "-t", "cpu-int8", "--calibration", f"{long}.npz", "-o", "{tmp}/o"),
        ("check", long),
        ("check", "{bundle}", "--inputs", f"{long}.npz"),
        ("fuse", long),
        ("fuse", "{bundle}/model.onnx", "-o", f"{long}.onnx"),
        ("fuse", "{unfused}", "-o", long),
        ("bench", long),
        ("bench", "{bundle}", "--json", f"{long}.json", "--no-torch", "--repeats", "1"),
        ("quantize", long),
        ("quantize", "{bundle}", "-o", long),
        ("quantize", "{bundle}", "--calibration", f"{long}.npz", "-o", "{tmp}/q"),
        ("quantize", "{bundle}", "--validation", f"{long}.npz", "-o", "{tmp}/q"),
    ]


@pytest.fixture(scope="module")
def unfused(tmp_path_factory):
    """An unfused fp32 gpt-mini bundle (fuse's input), exported once for this module."""
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    out = tmp_path_factory.mktemp("unfused") / "gpt-mini-unfused"
    target = resolve_target("cpu-fp32")
    import dataclasses

    export_bundle(
        source_from_card(resolve_card("gpt-mini")), dataclasses.replace(target, fusions="none"), out, check=False
    )
    return out


@pytest.mark.parametrize(
    "args", _long_cases(), ids=lambda a: " ".join(a[:1] + a[2:3]).replace("{", "").replace("}", "")
)
def test_long_file_names_in_every_path_argument(request, tmp_path, args):
    subs = {"tmp": str(tmp_path)}  # the bundles are built only for the cases that name them
    if any("{hf}" in a for a in args):
        subs["hf"] = str(tiny_gpt2(tmp_path / "hf"))
    if any("{bundle}" in a for a in args):
        subs["bundle"] = str(request.getfixturevalue("edge_bundle")("gpt-mini"))
    if any("{unfused}" in a for a in args):
        subs["unfused"] = str(request.getfixturevalue("unfused"))
    argv = [a.format(**subs) for a in args]
    out = cli(*argv, code=(1, 2))
    assert any(s in out.lower() for s in ("too long", "does not exist", "no such")), out
    assert len(out) < 2000, out  # the message shortens the path, not 300 characters of it twice


# ----- outputs on a read-only, full or special file system -----------------------------------------


def _fail_with(monkeypatch, errno_: int, where: str) -> None:
    """Make the file system refuse: ``where`` is "create" (temporary files and folders: a read-only
    file system refuses the first write) or "commit" (the final rename: all the work is done)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno_, os.strerror(errno_), str(kwargs.get("dir") or (args[1] if len(args) > 1 else args[0])))

    if where == "create":
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    else:
        import edgeformer.io

        real = os.replace
        monkeypatch.setattr(edgeformer.io, "exchange", refuse, raising=False)  # replacing an existing directory
        monkeypatch.setattr(
            edgeformer.io.os, "replace", lambda a, b, *r, **k: refuse(a, b) if ".tmp" in str(a) else real(a, b, *r, **k)
        )


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


READ_ONLY = (30, "read-only")  # errno.EROFS
DISK_FULL = (28, "no space left")  # errno.ENOSPC


@pytest.mark.parametrize("errno_, says", [READ_ONLY, DISK_FULL], ids=["read-only", "disk-full"])
def test_export_over_an_old_bundle_on_a_failing_disk(tmp_path, edge_bundle, monkeypatch, errno_, says):
    old = tmp_path / "gpt-mini"
    shutil.copytree(edge_bundle("gpt-mini"), old)
    before = _tree(old)
    _fail_with(monkeypatch, errno_, "commit" if errno_ == DISK_FULL[0] else "create")
    cli("export", "gpt-mini", "--no-check", "-t", "portable-fp32", "-o", old, "--force", says=says)
    assert _tree(old) == before, "the old bundle must survive whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt-mini"], "no temporary left beside it"


@pytest.mark.parametrize("errno_, says", [READ_ONLY, DISK_FULL], ids=["read-only", "disk-full"])
def test_fuse_and_quantize_on_a_failing_disk(tmp_path, edge_bundle, unfused, monkeypatch, errno_, says):
    graph = edge_bundle("gpt-mini") / "model.onnx"
    _fail_with(monkeypatch, errno_, "create")
    cli("fuse", graph, "-o", tmp_path / "f.onnx", says=says)
    cli("fuse", unfused, "-o", tmp_path / "fused", says=says)
    cli("quantize", edge_bundle("gpt-mini"), "--samples", "2", "-o", tmp_path / "q", says=says)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("errno_, says", [READ_ONLY, DISK_FULL], ids=["read-only", "disk-full"])
def test_import_and_train_on_a_failing_disk(tmp_path, monkeypatch, errno_, says):
    hf = tiny_gpt2(tmp_path / "hf")
    (tmp_path / "out").mkdir()
    _fail_with(monkeypatch, errno_, "create")
    cli("import", hf, "-o", tmp_path / "out" / "card.toml", says=says)
    cli("train", "demo-encoder", "--steps", "1", "-o", tmp_path / "out" / "trained", says=says)
    assert list((tmp_path / "out").iterdir()) == []


def test_proc_as_the_output(tmp_path, edge_bundle):
    cli("export", "gpt-mini", "--no-check", "-o", "/proc/edgeformer-out", says="/proc")
    cli("fuse", edge_bundle("gpt-mini") / "model.onnx", "-o", "/proc/self/f.onnx", says="/proc")
    cli("import", tiny_gpt2(tmp_path / "hf"), "-o", "/proc/card.toml", says="/proc")


# ----- paths relative to a bundle --------------------------------------------------------------------


def test_fuse_file_to_an_existing_directory_is_refused_before_work(tmp_path, edge_bundle):
    (tmp_path / "here").mkdir()
    out = cli("fuse", edge_bundle("gpt-mini") / "model.onnx", "-o", tmp_path / "here", says="is a directory")
    assert "skip_layer_norm" not in out  # refused before the passes ran
    assert list((tmp_path / "here").iterdir()) == []


def test_fuse_and_quantize_dot_inside_a_bundle(tmp_path, unfused, monkeypatch):
    bundle = tmp_path / "gpt-mini"
    shutil.copytree(unfused, bundle)
    before = _tree(bundle)
    monkeypatch.chdir(bundle)
    cli("fuse", ".", "-o", "inside", says="inside the input")
    cli("fuse", ".", "-o", ".", says="is the input")
    cli("fuse", ".", "-o", "..", says="holds the input")
    cli("quantize", ".", "-o", "sub/q", says="inside the input")
    cli("quantize", "./", "-o", "../gpt-mini", "--force", says="is the input")
    assert _tree(bundle) == before
    cli("quantize", ".", "--samples", "2", code=0)  # the default output goes beside the bundle, by its name
    assert (tmp_path / "gpt-mini-int8" / "manifest.json").is_file()
    assert _tree(bundle) == before


def _edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(bundle)  # the digest follows the edit: what is tested is the edited content


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda m: m.pop("config"), "no model config"),
        (lambda m: m.update(config={"family": "decoder"}), "config.vocab_size"),
        (lambda m: m["config"].update(max_positions=-3), "config.max_positions must be an integer >= 1"),
        (lambda m: m["config"].update(pad_token_id="0"), "config.pad_token_id"),
    ],
    ids=["no config", "no vocab", "negative positions", "text pad"],
)
def test_quantize_a_bundle_without_a_usable_config(tmp_path, edge_bundle, change, says):
    bundle = tmp_path / "b"
    shutil.copytree(edge_bundle("gpt-mini"), bundle)
    _edit_manifest(bundle, change)
    out = cli("quantize", bundle, "-o", tmp_path / "q", says=says)
    assert "quantizing" not in out and not (tmp_path / "q").exists()


def test_fuse_and_quantize_a_bundle_with_a_file_in_a_subfolder(tmp_path, unfused):
    bundle = tmp_path / "b"
    shutil.copytree(unfused, bundle)
    (bundle / "docs").mkdir()
    (bundle / "docs" / "LICENSE.txt").write_text("terms\n")
    _edit_manifest(bundle, lambda m: m["files"].update({"docs/LICENSE.txt": sha256_file(bundle / "docs/LICENSE.txt")}))
    cli("quantize", bundle, "--samples", "2", "-o", tmp_path / "q", code=0)
    cli("fuse", bundle, "-o", tmp_path / "f", code=0)
    for out in (tmp_path / "q", tmp_path / "f"):
        assert (out / "docs" / "LICENSE.txt").read_text() == "terms\n"
        runtime.load(out)  # the copy is listed and verified


# ----- API arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", b"", 123, 1.5, ["a"], object(), "a\0b"], ids=repr)
def test_runtime_load_of_a_non_path(value):
    with pytest.raises(OptionError, match="load()"):
        runtime.load(value)


def test_runtime_load_of_a_long_path(tmp_path):
    with pytest.raises(BundleFormatError, match="too long"):
        runtime.load(tmp_path / LONG)
    with pytest.raises(BundleFormatError, match="too long"):
        runtime.load("y" * 5000)


def test_generate_with_a_negative_seed_is_an_option_error(edge_bundle):
    model = runtime.load(edge_bundle("gpt-mini"))
    with pytest.raises(OptionError):
        model.generate([1, 2, 3], max_new_tokens=2, seed=-1)


def test_fuse_a_graph_whose_text_is_not_utf8_is_refused_by_name(tmp_path):
    # found by the damaged-bundle property suite: onnx-ir reads such a file, then cannot write it back
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.helper.set_model_props(model, {"note": "MARKMARK"})
    data = model.SerializeToString().replace(b"MARKMARK", b"\x80\x81\x82\x83\x84\x85\x86\x87")
    src = tmp_path / "damaged.onnx"
    src.write_bytes(data)
    result = CliRunner().invoke(main, ["fuse", str(src), "-o", str(tmp_path / "fused.onnx")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "damaged" in result.output
    assert not (tmp_path / "fused.onnx").exists()

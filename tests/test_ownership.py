"""--force replaces only what edgeformer wrote; nothing the user owns is written over (issue #18,
"Data loss"). Every hostile directory, file and name is built in the test."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from props import fuzz, outcome

from edgeformer.cli import main
from edgeformer.errors import CardError, ExportError
from edgeformer.ownership import TRAIN_MARKER, check_bundle_output, foreign_entries, stamped_onnx


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _mydocs(tmp_path: Path) -> Path:
    docs = tmp_path / "mydocs"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.txt").write_text("four years of work")
    (docs / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return docs


def _intact(docs: Path) -> None:
    assert (docs / "thesis.txt").read_text() == "four years of work"
    assert (docs / "sub" / "data.csv").read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in docs.iterdir()) == ["sub", "thesis.txt"]


def _refused_foreign(result, docs: Path) -> None:
    assert result.exit_code == 1, result.output
    assert "did not write" in result.output and "thesis.txt" in result.output, result.output
    assert "Move them or choose another -o" in result.output and "Traceback" not in result.output
    _intact(docs)


def test_export_force_keeps_a_users_directory(tmp_path):
    docs = _mydocs(tmp_path)
    _refused_foreign(run("export", "bert-mini", "-o", docs, "--force"), docs)
    _refused_foreign(run("export", "bert-mini", "-t", "cpu-int8", "-o", docs, "--force"), docs)  # the reduced path


def test_fuse_and_quantize_force_keep_a_users_directory(edge_bundle, tmp_path):
    docs = _mydocs(tmp_path)
    _refused_foreign(run("fuse", edge_bundle("bert-mini"), "-o", docs, "--force"), docs)
    _refused_foreign(run("quantize", edge_bundle("bert-mini"), "-o", docs, "--force"), docs)


def test_an_earlier_bundle_is_ours_and_one_foreign_file_makes_it_not(edge_bundle, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(edge_bundle("bert-mini"), out)
    assert foreign_entries(out) == []
    check_bundle_output(out, True, ExportError)  # replaceable with --force
    with pytest.raises(ExportError, match="pass --force"):
        check_bundle_output(out, False, ExportError)
    (out / "notes.md").write_text("mine")
    with pytest.raises(ExportError, match=r"did not write \(notes\.md\)"):
        check_bundle_output(out, True, ExportError)
    (out / "notes.md").unlink()
    (out / "extra").mkdir()
    assert foreign_entries(out) == ["extra/"]
    (out / "extra").rmdir()
    (out / "tokenizer.json").symlink_to(out / "model.onnx")  # a link is never ours
    assert foreign_entries(out) == ["tokenizer.json"]


def test_a_manifest_edgeformer_did_not_write_is_not_ours(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"files": {"x": "0"}, "format_version": 1}))  # no producer
    (out / "x").write_text("x")
    assert foreign_entries(out) == ["x"]
    (out / "manifest.json").write_text("[" * 10_000)  # unreadable: not ours, and no RecursionError
    assert foreign_entries(out) == ["x"]
    (out / "x").unlink()
    assert foreign_entries(out) == ["manifest.json (not one edgeformer wrote)"]
    empty = tmp_path / "empty"
    empty.mkdir()
    check_bundle_output(empty, True, ExportError)


def test_a_file_where_a_bundle_goes_is_refused_even_with_force(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    result = run("export", "bert-mini", "-o", notes, "--force")
    assert result.exit_code == 1 and "is a file, not a bundle directory" in result.output
    assert notes.read_text() == "mine"


def test_export_force_replaces_an_earlier_bundle(edge_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(edge_bundle("bert-mini"), out)
    before = json.loads((out / "manifest.json").read_text())["created"]
    result = run("export", "bert-mini", "-t", "unfused-fp32", "-o", out, "--force", "--no-check", "--seed", "3")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["seed"] == 3 and manifest["created"] >= before
    assert stamped_onnx(out / "model.onnx")


# ----- fuse FILE: never over a file without --force, and with it only over edgeformer's own -------


@pytest.fixture
def onnx_file(edge_bundle, tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    shutil.copyfile(edge_bundle("bert-mini") / "model.onnx", path)
    return path


def test_fuse_file_never_replaces_a_users_file(onnx_file, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    result = run("fuse", onnx_file, "-o", notes)
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    result = run("fuse", onnx_file, "-o", notes, "--force")
    assert result.exit_code == 1 and "not a file edgeformer wrote" in result.output, result.output
    assert notes.read_text() == "mine"
    folder = tmp_path / "folder"
    folder.mkdir()
    result = run("fuse", onnx_file, "-o", folder)
    assert result.exit_code == 1 and "is a directory" in result.output and "give -o a file path" in result.output
    assert list(folder.iterdir()) == []


def test_fuse_file_replaces_its_earlier_output_only_with_force(onnx_file):
    fused = onnx_file.with_suffix(".fused.onnx")
    shutil.copyfile(onnx_file, fused)  # a graph edgeformer wrote (stamped)
    before = fused.read_bytes()
    result = run("fuse", onnx_file)
    assert result.exit_code == 1 and "pass --force" in result.output and fused.read_bytes() == before
    result = run("fuse", onnx_file, "--force")
    assert result.exit_code == 0, result.output
    assert fused.read_bytes() != before and stamped_onnx(fused)


# ----- names are names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../escaped", "path separator"),
        ("/tmp/absolute", "path separator"),
        ("a\\b", "path separator"),
        ("..", "not a name"),
        ("", "missing"),
        ("nul\x00name", "control character"),
        ("line\nbreak", "control character"),
        ("x" * 300, "at most 100"),
    ],
)
def test_a_card_name_is_a_name_not_a_path(tmp_path, monkeypatch, name, rule):
    from edgeformer.config import load_card

    card = tmp_path / "card.toml"
    text = json.dumps(name)  # a TOML basic string is a JSON string
    model = '[model]\nfamily = "encoder"\nvocab_size = 8\nd_model = 8\nn_heads = 2\nn_layers = 1\n'
    card.write_text(f"name = {text}\n{model}")
    with pytest.raises(CardError, match=rule):
        load_card(card)
    monkeypatch.chdir(tmp_path)
    result = run("export", card, "--no-check")
    assert result.exit_code == 1 and rule in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.toml"]
    assert not (tmp_path.parent / "escaped-cpu-fp32").exists()


def test_import_name_is_a_name(tmp_path):
    result = run("import", tmp_path, "--name", "../escaped")
    assert result.exit_code == 1 and "--name" in result.output and "path separator" in result.output


# ----- modes follow the umask ---------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, mask):
    from edgeformer.io import atomic_dir, atomic_group, atomic_path

    old = os.umask(mask)
    try:
        with atomic_path(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "bundle") as tmp:
            (tmp / "sub").mkdir()
            with atomic_path(tmp / "sub" / "g.onnx") as inner:  # mkstemp: 0600 until committed
                inner.write_bytes(b"x")
        with atomic_group([tmp_path / "a.toml", tmp_path / "a.safetensors"]) as tmps:
            for t in tmps:
                t.write_text("x")
    finally:
        os.umask(old)
    files, dirs = 0o666 & ~mask, 0o777 & ~mask
    for path in [tmp_path / "f.json", tmp_path / "bundle" / "sub" / "g.onnx", tmp_path / "a.toml"]:
        assert stat.S_IMODE(path.stat().st_mode) == files, path
    for path in [tmp_path / "bundle", tmp_path / "bundle" / "sub"]:
        assert stat.S_IMODE(path.stat().st_mode) == dirs, path


# ----- runtime.load(optimized_model_path=...) ---------------------------------------------------


def test_optimized_model_path_never_writes_over_the_bundle_or_a_users_file(edge_bundle, tmp_path):
    from edgeformer import runtime
    from edgeformer.runtime.errors import OptionError

    bundle = tmp_path / "bundle"
    shutil.copytree(edge_bundle("bert-mini"), bundle)
    graph = (bundle / "model.onnx").read_bytes()
    for inside in (bundle / "model.onnx", bundle, bundle / "sub" / "x.onnx"):
        with pytest.raises(OptionError, match="inside the bundle"):
            runtime.load(bundle, optimized_model_path=inside)
    assert (bundle / "model.onnx").read_bytes() == graph
    notes = tmp_path / "notes.onnx"
    notes.write_text("mine")
    with pytest.raises(OptionError, match="not a graph onnxruntime saved"):
        runtime.load(bundle, optimized_model_path=notes)
    assert notes.read_text() == "mine"
    saved = tmp_path / "opt.onnx"
    runtime.load(bundle, optimized_model_path=saved)
    assert saved.is_file()
    runtime.load(bundle, optimized_model_path=saved)  # its own earlier output: written again


# ----- train writes a new directory, never the shipped model ---------------------------------------


def test_train_writes_a_new_directory_and_never_the_shipped_card(tmp_path, monkeypatch):
    from edgeformer.zoo import resolve_card

    shipped = resolve_card("demo-decoder")
    before = (shipped.path.read_bytes(), sha256_of(shipped.checkpoint))
    monkeypatch.chdir(tmp_path)
    result = run("train", "demo-decoder", "--steps", "1")
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo-decoder-trained"
    assert sorted(p.name for p in out.iterdir()) == [
        "demo-decoder.safetensors",
        "demo-decoder.toml",
        "edgeformer-train.json",
    ]
    assert (shipped.path.read_bytes(), sha256_of(shipped.checkpoint)) == before
    again = run("train", "demo-decoder", "--steps", "1")
    assert again.exit_code == 1 and "pass --force" in again.output
    exported = run("export", out / "demo-decoder.toml", "-t", "unfused-fp32", "--no-check", "-o", tmp_path / "b")
    assert exported.exit_code == 0, exported.output
    check_bundle_output(out, True, CardError, marker=TRAIN_MARKER)  # --force may replace it...
    (out / "notes.txt").write_text("mine")
    refused = run("train", "demo-decoder", "--steps", "1", "--force")  # ...but not with the user's file in it
    assert refused.exit_code == 1 and "notes.txt" in refused.output and (out / "notes.txt").read_text() == "mine"


def sha256_of(path: Path) -> str:
    from edgeformer.io import sha256_file

    return sha256_file(path)


# ----- generated: a name that passes is a plain name in the working directory ----------------------

_NAME_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
_names = st.one_of(
    st.text(_NAME_CHARS, max_size=120),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "\x00", "\n", "a", "-", "~", "C:", " "]), max_size=8).map("".join),
    st.text("ab/.\\", min_size=95, max_size=110),
)


@fuzz(1000)
@given(_names)
def test_generated_card_names_stay_in_the_working_directory(name):
    from edgeformer.config import check_card_name

    result = outcome("card name as a path", lambda: check_card_name(name), CardError)
    if isinstance(result, CardError):
        return
    here = Path("/work/here")
    for output in (here / f"{name}-cpu-fp32", here / f"{name}.toml", here / f"{name}-trained"):
        assert output.parent == here and Path(os.path.normpath(output)).parent == here, name
    assert 0 < len(name) <= 100 and all(ord(c) >= 32 and ord(c) != 127 for c in name)


_entry_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="/\x00"), min_size=1)
_kinds = st.sampled_from(["file", "dir", "link", "fifo", "nested"])


@fuzz(400)
@given(st.lists(st.tuples(_entry_names.filter(lambda n: n not in (".", "..")), _kinds), max_size=4))
def test_generated_extra_entries_make_a_bundle_not_ours(tmp_path_factory, extras):
    out = tmp_path_factory.mktemp("gen") / "b"
    out.mkdir()
    manifest = {"format_version": 1, "producer": {"edgeformer": "0"}, "files": {"model.onnx": "0"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "model.onnx").write_bytes(b"x")
    made = set()
    for name, kind in extras:
        path = out / name
        if os.path.lexists(path) or len(name.encode()) > 200 or name == "manifest.sha256":
            continue
        {"file": lambda p: p.write_text("mine"), "dir": Path.mkdir, "link": lambda p: p.symlink_to("/etc"),
         "fifo": os.mkfifo, "nested": lambda p: (p.mkdir(), (p / "x").write_text("mine"))}[kind](path)  # fmt: skip
        made.add(name)
    error = outcome("extra entries in a bundle dir", lambda: check_bundle_output(out, True, ExportError), ExportError)
    assert isinstance(error, ExportError) == bool(made), (extras, error)
    assert {e.split("/")[0] for e in foreign_entries(out)} == made

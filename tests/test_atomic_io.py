"""edgeformer.io: atomic files and directories, and the leftovers of killed writers.

The kill tests (test_atomic_kill.py) kill real exports; these pin down the pieces they rely on:
temporary siblings carry the writer's pid, leftovers of dead writers are removed (and a directory
caught between its two renames is put back), live writers' files are left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeformer import io


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_directory_replaced_in_one_step_and_nothing_left(tmp_path):
    out = tmp_path / "bundle"
    with io.atomic_dir(out) as tmp:
        assert tmp.name.startswith(f".bundle.{os.getpid()}.") and tmp.name.endswith(".tmp")
        (tmp / "a").write_text("old")
    with io.atomic_dir(out) as tmp:
        (tmp / "a").write_text("new")
        assert (out / "a").read_text() == "old", "the old directory stays until the new one is complete"
    assert (out / "a").read_text() == "new"
    assert _siblings(out) == []


def test_two_rename_fallback_also_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "exchange", lambda a, b: False)  # a platform without renameat2
    out = tmp_path / "bundle"
    for text in ("old", "new"):
        with io.atomic_dir(out) as tmp:
            (tmp / "a").write_text(text)
    assert (out / "a").read_text() == "new" and _siblings(out) == []


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "x").write_text("b")
    if not io.exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_failure_keeps_the_old_directory(tmp_path):
    out = tmp_path / "bundle"
    with io.atomic_dir(out) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), io.atomic_dir(out) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("export failed")
    assert (out / "a").read_text() == "old" and _siblings(out) == []


def test_leftovers_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    dead, live = _dead_pid(), os.getpid()
    (tmp_path / f".bundle.{dead}.abcd1234.tmp").mkdir()  # a killed export's half-written directory
    (tmp_path / f".bundle.{dead}.abcd1235.old").mkdir()  # an emptied replacement (old already restored)
    (tmp_path / f".bundle.{live}.abcd1236.tmp").mkdir()  # another export running right now
    (tmp_path / f".other.{dead}.abcd1237.tmp").mkdir()  # someone else's path
    (tmp_path / ".bundle.notapid.x.tmp").mkdir()  # not ours
    removed = io.clean_stale(out)
    assert sorted(p.name for p in removed) == [f".bundle.{dead}.abcd1234.tmp", f".bundle.{dead}.abcd1235.old"]
    assert _siblings(out) == sorted(
        [f".bundle.{live}.abcd1236.tmp", f".other.{dead}.abcd1237.tmp", ".bundle.notapid.x.tmp"]
    )


def test_kill_between_the_two_renames_is_repaired(tmp_path):
    """The fallback replaces a directory in two renames; a writer killed between them leaves the
    old directory inside its .old sibling and nothing at the path. The next write puts it back."""
    out = tmp_path / "bundle"
    dead = _dead_pid()
    old = tmp_path / f".bundle.{dead}.abcd1234.old"
    (old / "bundle").mkdir(parents=True)
    (old / "bundle" / "a").write_text("old")
    new = tmp_path / f".bundle.{dead}.abcd1235.tmp"
    new.mkdir()
    (new / "a").write_text("new, complete, but never renamed")
    io.clean_stale(out)
    assert (out / "a").read_text() == "old" and _siblings(out) == []


def test_atomic_file_cleans_dead_temporaries(tmp_path):
    target = tmp_path / "result.json"
    stale = tmp_path / f".result.json.{_dead_pid()}.abcd1234.tmp"
    stale.write_text("{half")
    with io.atomic_path(target) as tmp:
        assert tmp.name.startswith(f".result.json.{os.getpid()}.")
        tmp.write_text("{}")
    assert target.read_text() == "{}" and _siblings(target) == []


def test_pause_point_is_inert_unless_named(tmp_path, monkeypatch):
    signal = tmp_path / "paused"
    monkeypatch.setenv(io.PAUSE_SIGNAL, str(signal))
    monkeypatch.setenv(io.PAUSE_AT, "somewhere-else")
    io.pause_point("atomic_dir:complete")
    assert not signal.exists()
    monkeypatch.setenv(io.PAUSE_AT, "here")
    monkeypatch.setenv("EDGEFORMER_PAUSE_SECONDS", "0")
    io.pause_point("here")
    assert signal.read_text().split() == [str(os.getpid()), "here"]


def test_json_text_is_standard_json():
    """Manifests and --json output are read by JavaScript too: no Infinity or NaN, null instead."""
    from edgeformer.io import json_text

    text = json_text({"tolerance": float("inf"), "values": [float("nan"), -float("inf"), 1.5], "n": (1, 2)})
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"tolerance": None, "values": [None, None, 1.5], "n": [1, 2]}

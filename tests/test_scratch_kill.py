"""No scratch left behind: the working directories of an int8 export (its fp32 stage) and of a
quantization live beside the output under the temporaries' pid scheme (``.<name>.<pid>.<random>.tmp``),
so a kill leaves nothing in /tmp and the next write to the same output removes them."""

from __future__ import annotations

import os
from pathlib import Path

from killharness import EDGEFORMER, run_and_kill, temporaries

from edgeformer.io import clean_stale


def _private_tmp(tmp_path: Path) -> dict[str, str]:
    """A temp folder of the command's own (TMPDIR), to see what it leaves there."""
    (tmp_path / "tmpdir").mkdir()
    return {"TMPDIR": str(tmp_path / "tmpdir")}


def _scratch_removed_by_the_next_write(out: Path, pid_dirs: list[Path]) -> None:
    assert pid_dirs and all(p.is_dir() and p.name.endswith(".tmp") for p in pid_dirs), pid_dirs
    assert not out.exists()
    clean_stale(out)  # what the next export / quantize to ``out`` does first
    assert temporaries(out) == []


def _scratch_in(folder: str) -> list[str]:
    """What is left in a temp folder, less the caches torch and onnxruntime keep there on purpose."""
    return [n for n in os.listdir(folder) if not n.startswith("torchinductor_") and n != ".ses"]


def test_a_killed_int8_export_leaves_only_what_the_next_write_removes(tmp_path):
    out = tmp_path / "bundle"
    env = _private_tmp(tmp_path)
    args = [*EDGEFORMER, "export", "bert-mini", "-t", "cpu-int8", "-o", str(out), "--no-check"]
    result = run_and_kill([str(a) for a in args], at_point="export:graph-saved", env=env)  # the fp32 stage
    assert result.killed, result.log
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".edgeformer-fp32-")]
    _scratch_removed_by_the_next_write(out, temporaries(out))
    assert _scratch_in(env["TMPDIR"]) == [], "scratch left in the temp folder"


def test_a_killed_quantize_leaves_nothing_in_the_temp_folder(edge_bundle, tmp_path):
    out = tmp_path / "q"
    env = _private_tmp(tmp_path)
    args = [*EDGEFORMER, "quantize", str(edge_bundle("bert-mini")), "-o", str(out), "--precision", "fp16"]
    result = run_and_kill(args, at_point="atomic_dir:complete:q", env=env)
    assert result.killed, result.log
    assert _scratch_in(env["TMPDIR"]) == [], "scratch left in the temp folder"
    _scratch_removed_by_the_next_write(out, temporaries(out))

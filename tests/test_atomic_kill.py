"""Outputs under SIGKILL: an export, a quantization or a benchmark killed at any moment leaves the
complete old output or the complete new one where a user would load it, never a mix; the hidden
temporaries the dead process left are removed by the next write.

The moments: timed kills 0.5, 2 and 5 s after the start (imports, tracing), and exact ones at the
library's pause points (tests/killharness.py): a graph written into the temporary directory, the
new bundle complete before the swap, right after the swap, and -- on the fallback without
renameat2 -- between its two renames (repaired by the next write).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from killharness import EDGEFORMER, NO_EXCHANGE, bundle_state, file_state, run_and_kill, temporaries

from edgeformer.io import clean_stale


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    """cpu-fp32 without the fusion stage: the same bundle layout, a few seconds less per export."""
    path = tmp_path_factory.mktemp("target") / "kill-fp32.toml"
    path.write_text('name = "kill-fp32"\nprecision = "fp32"\nopset = 18\nproviders = ["cpu"]\nfusions = "none"\n')
    return path


def _old(edge_bundle, tmp_path: Path, card: str = "bert-mini") -> tuple[Path, dict[str, str]]:
    out = tmp_path / "bundle"
    shutil.copytree(edge_bundle(card), out)
    return out, json.loads((out / "manifest.json").read_text())["files"]


def _settle(out: Path, state: str, old_files: dict[str, str]) -> None:
    """The next write's clean-up removes the dead process's temporaries and keeps ``out`` as it is."""
    clean_stale(out)
    assert temporaries(out) == [], temporaries(out)
    assert bundle_state(out, old_files) == state


def _export(out: Path, target: Path) -> list[str]:
    args = [*EDGEFORMER, "export", "bert-mini", "-o", out, "--force", "--no-check", "--seed", "1", "-t", target]
    return [str(a) for a in args]


@pytest.mark.parametrize("seconds", [0.5, 2.0, 5.0])
def test_export_killed_after_some_seconds(edge_bundle, tmp_path, target, seconds):
    out, old_files = _old(edge_bundle, tmp_path)
    result = run_and_kill(_export(out, target), after=seconds)
    state = bundle_state(out, old_files)
    if not result.killed:  # the export ended before the kill came: it must have succeeded
        assert result.returncode == 0 and state == "new", result.log
    assert all(p.name.startswith(".") for p in temporaries(out)), "a temporary a user would see"
    _settle(out, state, old_files)


def test_export_killed_while_writing_and_before_the_swap(edge_bundle, tmp_path, target):
    out, old_files = _old(edge_bundle, tmp_path)
    seen = []

    def graph_written() -> None:  # model.onnx is in the temporary directory, the manifest is not
        seen.append(bundle_state(out, old_files))
        (tmp,) = [p for p in temporaries(out) if p.suffix == ".tmp"]
        assert (tmp / "model.onnx").is_file() and not (tmp / "manifest.json").exists()

    result = run_and_kill(
        _export(out, target), stops={"export:graph-saved": graph_written}, at_point="atomic_dir:complete:bundle"
    )
    assert result.killed and result.stops == ["export:graph-saved"] and seen == ["old"], result.log
    assert bundle_state(out, old_files) == "old"
    _settle(out, "old", old_files)


def test_export_killed_right_after_the_swap(edge_bundle, tmp_path, target):
    out, old_files = _old(edge_bundle, tmp_path)
    result = run_and_kill(_export(out, target), at_point="atomic_dir:exchanged:bundle")
    assert result.killed, result.log
    assert bundle_state(out, old_files) == "new"
    _settle(out, "new", old_files)


def test_kill_between_the_fallback_renames_is_repaired_by_the_next_write(edge_bundle, tmp_path, target):
    out, old_files = _old(edge_bundle, tmp_path)
    args = [*NO_EXCHANGE, *_export(out, target)[len(EDGEFORMER) :]]
    result = run_and_kill(args, at_point="atomic_dir:between-renames:bundle")
    assert result.killed, result.log
    assert not out.exists(), "the window the fallback has: the old bundle is parked in its .old sibling"
    assert sorted(p.suffix for p in temporaries(out)) == [".old", ".tmp"]
    _settle(out, "old", old_files)


def test_killed_quantize_leaves_the_old_bundle(edge_bundle, tmp_path):
    if not (Path(__file__).parents[1] / "edgeformer" / "quantize" / "bundle.py").is_file():
        pytest.skip("`edgeformer quantize` is not in this checkout")
    out, old_files = _old(edge_bundle, tmp_path)
    args = [*EDGEFORMER, "quantize", str(edge_bundle("gpt-mini")), "-o", str(out), "--force", "--samples", "4"]
    result = run_and_kill(args, at_point="atomic_dir:complete:bundle")
    assert result.killed, result.log
    _settle(out, "old", old_files)


def test_killed_bench_leaves_the_old_result_file(edge_bundle, tmp_path):
    from edgeformer.cli import main

    if "bench" not in main.commands:
        pytest.skip("`edgeformer bench` is not in this checkout")
    report = tmp_path / "bench.json"
    old = b'{"old": "report"}\n'
    report.write_bytes(old)
    args = [*EDGEFORMER, "bench", str(edge_bundle("bert-mini")), "--json", str(report), "--no-torch", "--no-limits"]
    args += ["--iterations", "1", "--repeats", "1", "--warmup", "0", "--sequence", "8"]
    result = run_and_kill(args, at_point="atomic_path:complete:bench.json")
    assert result.killed, result.log
    assert file_state(report, old, json.loads) == "old"
    assert [p.suffix for p in temporaries(report)] == [".tmp"]  # the complete new report, never renamed
    clean_stale(report)
    assert temporaries(report) == [] and report.read_bytes() == old

"""bench/long_context.py without its exports (they are what the lead runs on a quiet machine): the cards it
builds, the ratios it reports, the PNG it draws and a failed point reported instead of raised."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("long_context", ROOT / "bench" / "long_context.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(series: str, s: int, ms: float, mib: int) -> dict:
    return {"kind": "forward", "series": series, "graph": "model", "batch": 1, "threads": 2, "sequence": s,
            "p50_ms": ms, "peak_rss_bytes": mib << 20}  # fmt: skip


def test_cards_are_the_issues_base_encoders(bench):
    from edgeformer.config import parse_card

    local = parse_card(bench.card("local", "base")).config
    assert (local.d_model, local.n_layers, local.window, local.global_tokens, local.max_positions) == (
        768, 12, 257, 1, 16384)  # fmt: skip
    sparse = parse_card(bench.card("sparse", "tiny")).config
    assert (sparse.attention, sparse.sparse_stride, sparse.max_positions) == ("sparse", 8, 256)


def test_summary_ratios_and_png(bench, tmp_path):
    rows = [_row("local masked", 64, 8.0, 400), _row("local banded", 64, 2.0, 100), _row("local banded", 128, 4.2, 110)]
    rows.append(_row("global masked", 64, 1.0, 10) | {"p50_ms": None, "error": "killed"})
    summary = bench.summarize(rows)
    assert summary == [
        {"what": "local banded / masked", "sequence": 64, "time": 0.25, "memory": 0.25},
        {"what": "local banded time(2S) / time(S)", "sequence": 64, "time": pytest.approx(2.1)},
    ]
    from edgeformer.benchmark.plots import plot

    plot({"rows": rows[:3]}, tmp_path / "lc.png")
    assert (tmp_path / "lc.png").read_bytes()[:4] == b"\x89PNG"


def test_a_point_that_fails_is_reported(bench, tmp_path):
    point = bench.measure(tmp_path / "missing", 16, 1, 1)
    assert point["p50_ms"] is None and point["peak_rss_bytes"] is None
    assert "NO_SUCHFILE" in point["error"] and "missing/model.onnx" in point["error"]


def test_a_point_measures_its_own_memory_not_the_parents(bench, edge_bundle):
    import torch

    fat = torch.ones(200_000_000)  # 800 MB held by this process while the child measures
    point = bench.measure(edge_bundle("bert-mini"), 16, 1, 1)
    assert fat.sum() > 0 and point["p50_ms"] > 0 and 10 << 20 < point["peak_rss_bytes"] < 600 << 20, point

"""bench/export_time.py in its smoke mode: tiny Hugging Face directories, edgeformer only (optimum absent:
its rows say so). What is checked is what is measured and reported, never how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_export_time_smoke_mode_reports_time_memory_and_ratios(tmp_path):
    out = tmp_path / "export_time.json"
    command = [sys.executable, str(ROOT / "bench" / "export_time.py"), "--size", "tiny", "--models", "bert"]
    command += ["--precisions", "fp32", "int8", "--optimum-python", str(tmp_path / "no-such-python")]
    command += ["--workdir", str(tmp_path / "work"), "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    rows = {(r["tool"], r["precision"]): r for r in result["rows"]}
    assert list(rows) == [("edgeformer", "fp32"), ("edgeformer", "int8"), ("optimum", "fp32"), ("optimum", "int8")]
    for key in [("edgeformer", "fp32"), ("edgeformer", "int8")]:
        assert rows[key]["seconds"] > 0 and 50 < rows[key]["peak_rss_mib"] < 16_000, rows[key]
        assert "error" not in rows[key]
    assert (tmp_path / "work" / "bert-edgeformer-int8" / "manifest.json").is_file()
    for key in [("optimum", "fp32"), ("optimum", "int8")]:
        assert rows[key] == {"model": "bert", "tool": "optimum", "precision": key[1], "seconds": None,
                             "peak_rss_mib": None, "note": "not installed"}  # fmt: skip
    ratios = {r["ratio"]: r for r in result["ratios"]}
    int8 = ratios["edgeformer int8 / edgeformer fp32"]
    want = round(rows[("edgeformer", "int8")]["seconds"] / rows[("edgeformer", "fp32")]["seconds"], 2)
    assert int8["value"] == want and int8["goal"] == 2.0
    assert ratios["edgeformer fp32 / optimum fp32"]["value"] is None  # nothing to compare with
    assert ratios["edgeformer int4 / edgeformer fp32"]["value"] is None  # not run
    assert "bert   optimum     fp32              -         -  not installed" in done.stdout
    assert f"bert   edgeformer int8 / edgeformer fp32      {want:.2f} (goal <= 2.0)" in done.stdout

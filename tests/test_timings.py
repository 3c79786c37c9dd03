"""Every stage of an export is timed: a progress line as it starts and ends, ``--timings`` prints the
breakdown, and the manifest (hence ``--json``) carries it."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from edgeformer import pipeline
from edgeformer.cli import main
from edgeformer.export.source import source_from_card
from edgeformer.pipeline import Timings, export_bundle, timings_table
from edgeformer.zoo import resolve_card, resolve_target


def test_each_stage_logs_its_start_and_its_end_with_seconds(monkeypatch):
    ticks = iter([0.0, 10.0, 12.5, 13.0, 16.0, 20.0, 20.0])
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: next(ticks))
    lines: list[str] = []
    clock = Timings(lines.append)  # started at 0.0
    with clock.stage("trace", "tracing model.onnx (opset 18)") as said:  # 10.0 -> 12.5
        said.append("120 nodes")
    with clock.stage("fuse", "fusing model.onnx (contrib)"):  # 13.0 -> 16.0
        pass
    assert lines == [
        "trace: tracing model.onnx (opset 18) ...",
        "trace: 120 nodes, 2.5 s",
        "fuse: fusing model.onnx (contrib) ...",
        "fuse: done, 3.0 s",
    ]
    assert clock.to_dict() == {"trace": 2.5, "fuse": 3.0, "total": 20.0}  # total: 0.0 -> 20.0
    assert timings_table(clock.to_dict()) == [
        "stage         seconds  share",
        "trace             2.5    12%",
        "fuse              3.0    15%",
        "total            20.0",
    ]


def test_export_prints_stage_lines_and_the_timings_table(tmp_path):
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["export", "bert-mini", "-o", str(out), "--timings"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "trace: tracing model.onnx (opset 18) ..." in text
    assert re.search(r"^trace: \d+ nodes, \d+\.\d s$", text, re.M), text
    assert re.search(r"^fuse: \d+ passes, nodes \d+ -> \d+, \d+\.\d s$", text, re.M), text
    assert re.search(r"^verify: ok, \d+\.\d s$", text, re.M), text
    table = text[text.index("stage         seconds  share") :].splitlines()
    assert [row.split()[0] for row in table] == ["stage", "trace", "fuse", "verify", "total"]
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    assert list(timings) == ["trace", "fuse", "verify", "total"]
    assert all(v > 0 for v in timings.values()) and timings["total"] >= sum(
        v for k, v in timings.items() if k != "total"
    )
    assert [float(row.split()[1]) for row in table[1:]] == [round(v, 1) for v in timings.values()]


def test_the_json_report_carries_the_timings(tmp_path):
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["export", "gpt-mini", "-o", str(out), "--no-check", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert list(printed["timings"]) == ["trace", "fuse", "total"]  # --no-check: no verify stage
    assert printed["timings"] == json.loads((out / "manifest.json").read_text())["timings"]


def test_a_reduced_precision_times_its_quantize_and_both_verify_stages(tmp_path):
    lines: list[str] = []
    source = source_from_card(resolve_card("bert-mini"))
    manifest = export_bundle(source, resolve_target("cpu-int8"), tmp_path / "b", log=lines.append)
    assert list(manifest["timings"]) == ["trace", "fuse", "verify-fp32", "quantize", "verify", "total"]
    assert "quantize: quantizing to int8 ..." in lines
    assert any(re.fullmatch(r"quantize: budget met, \d+\.\d s", line) for line in lines), lines
    assert any(re.fullmatch(r"verify: ok, \d+\.\d s", line) for line in lines), lines

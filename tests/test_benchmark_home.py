"""Benchmarking in one home (edgeformer/benchmark/): the device runner stays torch-free, the options
are declared once for both command lines, settings travel to workers as JSON, and one process
harness (python -P, JSON answers, timeouts) serves `edgeformer bench` and the scripts in bench/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from edgeformer.benchmark import device, settings
from edgeformer.benchmark.harness import Worker, WorkerError, run_job
from edgeformer.benchmark.options import OPTIONS, Limits, Settings, limits_from_values, settings_from_values
from edgeformer.cli import main
from edgeformer.runtime.errors import OptionError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgeformer" / "benchmark"
DEVICE_MODULES = (  # what runs on a device: onnxruntime and numpy, never torch
    "options", "settings", "stats", "timing", "loops", "limits", "runner", "device",
    "report", "output", "plots", "harness", "worker",
)  # fmt: skip


def test_the_device_runner_imports_without_torch_onnx_or_click():
    names = [f"edgeformer.benchmark.{m}" for m in DEVICE_MODULES] + ["edgeformer.runtime.bench"]
    code = textwrap.dedent(f"""
        import importlib, json, sys
        for blocked in ("torch", "onnx", "onnxscript", "onnx_ir", "click", "matplotlib"):
            sys.modules[blocked] = None  # an import of any of them fails
        for name in {names!r}:
            importlib.import_module(name)
        heavy = sorted(k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in
                       ("torch", "onnx", "onnxscript", "onnx_ir", "click", "matplotlib"))
        print(json.dumps({{"heavy": heavy, "ort": "onnxruntime" in sys.modules}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"heavy": [], "ort": True}


def test_the_declaration_imports_nothing_heavy():
    """The CLI builds `edgeformer bench`'s options from it at start-up: no numpy, no onnxruntime."""
    code = "import sys; import edgeformer.benchmark.options; print(sorted({'numpy', 'onnxruntime'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_both_command_lines_are_generated_from_the_one_declaration():
    params = {opt: p for p in main.commands["bench"].params for opt in (*p.opts, *p.secondary_opts)}
    parser = device._parser("bundle")
    flags = {opt for action in parser._actions for opt in action.option_strings}
    for o in OPTIONS:
        assert o.flag in params and o.flag in flags, o.flag
        if o.parse is None:  # a switch: --x/--no-x in both
            assert f"--no-{o.flag[2:]}" in params and f"--no-{o.flag[2:]}" in flags
            assert params[o.flag].default is o.default()
    # nothing given: the dataclasses' defaults, from either side
    assert settings_from_values(settings.values_of(parser.parse_args(["b"]))) == Settings()
    assert limits_from_values(settings.values_of(parser.parse_args(["b"]))) == Limits()
    assert settings_from_values({"time_budget": 2.0}) == Settings(iterations=None, time_budget=2.0)


@pytest.mark.parametrize(
    ("flag", "bad", "message"),
    [
        ("--threads", "two", "'two' is not an integer (give a comma-separated list)"),
        ("--batch", "1,5000", "5000 is not an integer from 1 to 4,096"),
        ("--time-budget", "nan", "'nan' is not a finite number of seconds"),
        ("--limits-matmul", "8", "8 is not an integer from 16 to 16,384"),
        ("--loop", "fast", "loops are runtime and bare, got 'fast'"),
        ("--input-seed", "-1", "-1 is not an integer from 0 to 18,446,744,073,709,551,615"),
    ],
)
def test_a_bad_value_gets_one_message_from_both_command_lines(tmp_path, capsys, flag, bad, message):
    result = CliRunner().invoke(main, ["bench", str(tmp_path), flag, bad])
    assert result.exit_code == 2 and message in result.output and flag in result.output
    with pytest.raises(SystemExit) as exit_info:
        device.main([str(tmp_path), flag, bad])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and f"argument {flag}" in err


def test_settings_travel_as_json_and_wrong_kinds_are_named():
    full = Settings(threads=(1, 2), sequences=(4,), iterations=None, time_budget=0.5, loops=("bare",), seed=9)
    data = json.loads(json.dumps(settings.to_json(full, Limits(False, 32, 1))))
    assert data["settings"]["threads"] == [1, 2] and data["limits"] == {
        "enabled": False,
        "matmul_size": 32,
        "bandwidth_mb": 1,
    }
    assert settings.from_json(data) == (full, Limits(False, 32, 1))
    for bad, why in (
        ({"settings": {"threads": ["1"]}}, "'threads' has a value of the wrong kind"),
        ({"settings": {"warmup": True}}, "'warmup' has a value of the wrong kind"),
        ({"settings": {"warmup": None}}, "'warmup' has a value of the wrong kind"),
        ({"settings": {"threads": 2}}, "'threads' has a value of the wrong kind"),
        ({"settings": {"turbo": 1}}, "unknown benchmark setting 'turbo'"),
        ({"settings": {}, "limits": {"matmul_size": 1.5}}, "'matmul_size' has a value of the wrong kind"),
        ([], "must be a JSON object"),
    ):
        with pytest.raises(OptionError, match=why):
            settings.from_json(bad)


# ----- the process harness ------------------------------------------------------------------------------

SERVER = """
import os, sys, time
from edgeformer.benchmark.harness import serve
from edgeformer.errors import EdgeformerError

def handle(request):
    print("stray output of a library")  # must not garble the answers
    if request["do"] == "fail":
        raise EdgeformerError("the bundle is gone")
    if request["do"] == "sleep":
        time.sleep(30)
    if request["do"] == "crash":
        sys.stderr.write("something broke\\n")
        os._exit(3)
    return {"twice": 2 * request["x"], "cwd_on_path": "" in sys.path or os.getcwd() in sys.path}

serve(handle)
"""


def test_the_harness_answers_names_errors_and_stops_a_worker_past_its_timeout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # -P: the working directory (a bundle, say) is not on the worker's path
    with Worker(["-c", SERVER], what="test worker", timeout=60) as worker:
        assert worker.call({"do": "echo", "x": 21}, timeout=60) == {"twice": 42, "cwd_on_path": False}
        with pytest.raises(WorkerError, match="test worker failed: the bundle is gone"):
            worker.call({"do": "fail"}, timeout=60)
        assert worker.call({"do": "echo", "x": 1}, timeout=60)["twice"] == 2  # still serving
        with pytest.raises(WorkerError, match=r"test worker gave no answer within 0.5 s \(measuring\); stopped it"):
            worker.call({"do": "sleep"}, timeout=0.5)
        assert worker.proc.poll() is not None  # the process is gone, not left running
    with pytest.raises(WorkerError, match=r"(?s)crasher died \(exit status 3\):.*something broke"):
        run_job(["-c", SERVER], {"do": "crash"}, what="crasher", timeout=60)


def test_bench_stops_a_variant_past_its_timeout(edge_bundle):
    result = CliRunner().invoke(
        main, ["bench", str(edge_bundle("bert-mini")), "--no-torch", "--no-limits", "--timeout", "0.01"]
    )
    assert result.exit_code == 1 and "variant bert-mini gave no answer within 0.01 s" in result.output
    assert "Traceback" not in result.output


def test_fusion_latency_workers_run_on_the_harness(edge_bundle, tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from fusion_latency import request, start_worker

    model = edge_bundle("bert-mini") / "model.onnx"
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, input_ids=np.ones((1, 8), np.int64), attention_mask=np.ones((1, 8), np.int64))
    worker = start_worker("unfused", str(model), "bert-mini", 1)
    try:
        times = worker.call(request(feeds, 3, 1, save=tmp_path / "out.npz"), 120)
    finally:
        worker.close()
    assert len(times) == 3 and all(t > 0 for t in times)
    assert np.load(tmp_path / "out.npz")["arr_0"].shape[:2] == (1, 8)


# ----- one home, small modules -------------------------------------------------------------------------


def test_benchmarking_lives_in_one_package_of_small_modules_and_functions():
    for gone in ("edgeformer/bench_variants.py", "edgeformer/bench_torch.py", "edgeformer/runtime/bench_report.py"):
        assert not (ROOT / gone).exists(), gone
    assert len((ROOT / "edgeformer/runtime/bench.py").read_text().splitlines()) < 15  # a forwarding module
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length < 60, f"{path.name}:{node.name} is {length} lines"


def test_click_types_of_declared_options_convert_only_text():
    """click converts defaults through the type too: parsed values pass as they are."""
    o = next(o for o in OPTIONS if o.flag == "--batch")
    param = next(p for p in main.commands["bench"].params if "--batch" in p.opts)
    assert isinstance(param.type, click.ParamType) and param.type.convert((1, 4), param, None) == (1, 4)
    assert param.type.convert("1,4", param, None) == o.parse("1,4") == (1, 4)

"""Benchmarking tools: the device runner, reports, merging, plots, and `edgeformer bench`.

These tests check what is measured and how it is reported (raw samples, summaries against known
numbers, identical tokens in every loop, schema, CSV, PNG, merge, errors), never how fast anything
is: iterations are 2-3 on tiny bundles.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeformer import runtime
from edgeformer.benchmark import device, loops, stats
from edgeformer.benchmark import report as rep
from edgeformer.benchmark import settings as bench_settings
from edgeformer.benchmark.limits import GRAPHS, measure_limits
from edgeformer.benchmark.options import Settings, settings_from_values
from edgeformer.cli import main as cli
from edgeformer.runtime.errors import OptionError
from edgeformer.runtime.generate import greedy_decoder, greedy_seq2seq

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--iterations", "3", "--warmup", "1", "--gen-warmup", "1", "--gen-runs", "2"]
TINY_LIMITS = ["--limits-matmul", "64", "--limits-mb", "2"]


@pytest.fixture(scope="module")
def bundles(request, tmp_path_factory):
    """card -> cpu-fp32 bundle: the session's shared edge bundles when conftest has them."""
    try:
        return request.getfixturevalue("edge_bundle")
    except pytest.FixtureLookupError:
        from edgeformer.export.source import source_from_card
        from edgeformer.pipeline import export_bundle
        from edgeformer.zoo import resolve_card, resolve_target

        made: dict[str, Path] = {}
        root = tmp_path_factory.mktemp("bench-bundles")

        def get(card: str) -> Path:
            if card not in made:
                source = source_from_card(resolve_card(card))
                export_bundle(source, resolve_target("cpu-fp32"), root / card, check=False)
                made[card] = root / card
            return made[card]

        return get


def _runner(*argv: str, capsys=None) -> tuple[int, str, str]:
    out = io.StringIO()
    code = device.main(list(argv), out=out)
    err = capsys.readouterr().err if capsys is not None else ""
    return code, out.getvalue(), err


# ----- statistics ----------------------------------------------------------------------------------


def test_summary_percentiles_mean_and_stdev_on_known_samples():
    samples = np.random.default_rng(0).permutation(np.arange(1, 101)) / 1000.0  # 1..100 ms, shuffled
    s = stats.summarize(samples.tolist())
    assert s["n"] == 100 and s["min"] == pytest.approx(0.001) and s["max"] == pytest.approx(0.1)
    # linear interpolation between closest ranks: p = 1 + (n - 1) q
    assert s["p50"] == pytest.approx(0.0505) and s["p90"] == pytest.approx(0.0901)
    assert s["p99"] == pytest.approx(0.09901)
    assert s["mean"] == pytest.approx(0.0505)
    assert s["stdev"] == pytest.approx(np.sqrt(np.sum((np.arange(1, 101) - 50.5) ** 2) / 99) / 1000)  # ddof=1
    for p in (50, 90, 99):
        assert s[f"p{p}"] == pytest.approx(float(np.percentile(samples, p)))
    assert stats.summarize([3.0, 1.0, 2.0])["p50"] == 2.0
    assert stats.summarize([0.5])["stdev"] == 0.0
    with pytest.raises(OptionError, match="no samples"):
        stats.summarize([])


def test_generation_summary_from_token_times():
    runs = [{"token_s": [0.1, 0.15, 0.2, 0.25]}, {"token_s": [0.3, 0.4, 0.5, 0.6]}]
    s = stats.generation_summary(runs, batch=2)
    assert s["ttft_s"]["p50"] == pytest.approx(0.2) and s["ttft_s"]["n"] == 2
    assert s["total_s"]["max"] == pytest.approx(0.6)
    assert s["per_token_s"]["n"] == 6 and s["per_token_s"]["min"] == pytest.approx(0.05)
    assert s["tokens_per_s"] == pytest.approx(np.median([3 / 0.15, 3 / 0.3]))  # decode: (N - 1) / (t_N - t_1)
    assert s["e2e_tokens_per_s"] == pytest.approx(np.median([4 / 0.25, 4 / 0.6]))
    assert s["aggregate_tokens_per_s"] == pytest.approx(2 * s["tokens_per_s"])


# ----- limits --------------------------------------------------------------------------------------


def test_limits_graphs_are_valid_onnx_and_compute_products():
    import onnx
    import onnxruntime as ort

    for name, data in GRAPHS.items():
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        assert [n.op_type for n in model.graph.node] == (["MatMulInteger"] if name == "matmul_int8" else ["MatMul"])
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5), dtype=np.float32), rng.standard_normal((5, 4), dtype=np.float32)
    got = ort.InferenceSession(GRAPHS["matmul_fp32"], providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})
    np.testing.assert_allclose(got[0], a @ b, rtol=1e-5)
    # activations below 128: AVX2's u8 x s8 kernel saturates int16 pair sums above that
    qa, qb = rng.integers(0, 128, (3, 7), dtype=np.uint8), rng.integers(-128, 128, (7, 4), dtype=np.int8)
    got = ort.InferenceSession(GRAPHS["matmul_int8"], providers=["CPUExecutionProvider"]).run(None, {"a": qa, "b": qb})
    np.testing.assert_array_equal(got[0], qa.astype(np.int32) @ qb.astype(np.int32))
    found = measure_limits(1, matmul_size=32, bandwidth_mb=1, iterations=2, budget_s=0.1)
    assert found["matmul_fp32"]["gflops"] > 0 and found["matmul_int8"]["gops"] > 0 and found["bandwidth"]["gbs"] > 0
    assert found["bandwidth"]["bytes"] == 4 * found["bandwidth"]["k"] * found["bandwidth"]["m"] == 1 << 20
    assert all(len(v["samples_s"]) >= 2 for v in found.values())
    with pytest.raises(OptionError, match="matmul size"):
        measure_limits(1, matmul_size=0)


# ----- the loops -----------------------------------------------------------------------------------


def test_bare_loop_and_runtime_generate_choose_the_same_greedy_tokens(bundles):
    model = runtime.load(bundles("gpt-mini"), threads=1)
    ids = loops.prompt_ids(0, model.vocab_size, 2, 5)
    got, times = loops.runtime_generate(model, ids, 12)
    bare, bare_times = loops.bare_generate(model, ids, 12)
    np.testing.assert_array_equal(got, bare)
    np.testing.assert_array_equal(bare, greedy_decoder(model.sessions["model"], ids, 12))
    assert len(times) == len(bare_times) == 12 and np.all(np.diff(times) >= 0) and np.all(np.diff(bare_times) >= 0)

    s2s = runtime.load(bundles("transformer-mini"), threads=1)
    src = loops.prompt_ids(0, s2s.vocab_size, 2, 6)
    got, times = loops.runtime_generate(s2s, src, 10)
    bare, _ = loops.bare_generate(s2s, src, 10)
    np.testing.assert_array_equal(got, bare)
    want = greedy_seq2seq(s2s.sessions["encoder"], s2s.sessions["decoder"], src, s2s.start_token, 10)
    np.testing.assert_array_equal(bare, want)
    assert len(times) == 10


def test_settings_resolve_to_what_fits_and_round_trip_through_json_and_argparse():
    gpt = {"max_positions": 128, "vocab_size": 1024}
    s = bench_settings.resolve(Settings(threads=(1,)), "decoder", gpt)
    assert s.sequences == (8, 32, 128) and s.prompts == (32,) and s.new_tokens == (96,)  # 32 + 96 = 128
    enc = bench_settings.resolve(Settings(), "encoder", {"max_positions": 16})
    assert enc.sequences == (8,) and enc.prompts == () and not enc.generate
    assert bench_settings.resolve(s, "decoder", gpt) == s
    assert bench_settings.resolve(enc, "encoder", {"max_positions": 16}) == enc
    other = Settings(threads=(2,), batches=(1, 4), iterations=None, time_budget=1.5, spinning=False)
    for settings in (s, dataclasses.replace(other, providers=("xnnpack", "cpu"), seed=2**64 - 1)):
        # what a worker process receives: JSON text, not argv
        assert bench_settings.from_json(json.loads(json.dumps(bench_settings.to_json(settings)))) == (settings, None)
    parser = bench_settings.argparse.ArgumentParser()
    bench_settings.add_argparse_options(parser)
    argv = ["--threads", "2", "--batch", "1,4", "--time-budget", "1.5", "--no-spinning"]
    argv += ["--providers", "xnnpack,cpu", "--input-seed", str(2**64 - 1)]
    back = settings_from_values(bench_settings.values_of(parser.parse_args(argv)))
    assert back == dataclasses.replace(other, providers=("xnnpack", "cpu"), seed=2**64 - 1)


# ----- the device runner ---------------------------------------------------------------------------


def test_device_runner_report_holds_samples_summary_machine_versions_and_settings(bundles, tmp_path):
    argv = [str(bundles("gpt-mini")), *TINY, *TINY_LIMITS, "--threads", "1", "--sequence", "4,8"]
    argv += ["--prompt", "3", "--new-tokens", "5", "--label", "here"]
    code, out, _ = _runner(*argv, "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"), "--quiet")
    assert code == 0, out
    report = rep.read_report(tmp_path / "r.json")
    assert report["schema"] == "edgeformer-bench/1" and len(report["runs"]) == 1
    run = report["runs"][0]
    assert run["label"] == "here" and run["variant"] == "gpt-mini"
    assert run["machine"]["cpu"] and isinstance(run["machine"]["flags"], list) and run["machine"]["physical_cores"] >= 1
    assert {"edgeformer", "onnxruntime", "numpy", "python"} <= set(run["versions"])
    assert run["settings"]["iterations"] == 3 and run["settings"]["sequences"] == [4, 8]
    assert run["session"]["create_s"][0] > 0 and run["memory"]["peak_rss_bytes"] > 0
    # weights read per token, from the manifest: the position table is only gathered from (rows),
    # so it is less than the file holding it
    manifest = json.loads((bundles("gpt-mini") / "manifest.json").read_text())
    assert run["model"]["weight_bytes"] == manifest["graphs"]["model"]["weights_read_bytes"]
    assert run["model"]["weight_bytes_from"] == "manifest weights_read_bytes"
    assert 0 < run["model"]["weight_bytes"] < (bundles("gpt-mini") / "model.onnx").stat().st_size
    forward = [c for c in run["cases"] if c["kind"] == "forward"]
    assert [c["sequence"] for c in forward] == [4, 8]
    for case in forward:
        assert len(case["samples_s"]) == 3
        assert case["summary"]["latency_s"]["p90"] == pytest.approx(np.percentile(case["samples_s"], 90))
    gen = {c["loop"]: c for c in run["cases"] if c["kind"] == "generate"}
    assert set(gen) == {"runtime", "bare"}
    for case in gen.values():
        assert case["loops_agree"] and len(case["runs"]) == 2 and all(len(r["token_s"]) == 5 for r in case["runs"])
        assert np.array(case["tokens"]).shape == (1, 5)
    lim = run["limits"]["1"]
    assert lim["matmul_fp32"]["gflops"] > 0 and lim["matmul_int8"]["gops"] > 0 and lim["bandwidth"]["gbs"] > 0
    rows = {(r["kind"], r["loop"], r["sequence"]): r for r in report["rows"]}
    runtime_row = rows[("generate", "runtime", None)]
    bound = lim["bandwidth"]["gbs"] * 1e9 / run["model"]["weight_bytes"]
    assert runtime_row["bandwidth_limit_tokens_per_s"] == pytest.approx(bound)
    assert runtime_row["bandwidth_fraction"] == pytest.approx(runtime_row["tokens_per_s"] / bound)
    totals = {loop: gen[loop]["summary"]["total_s"]["p50"] for loop in gen}
    assert runtime_row["overhead_vs_bare"] == pytest.approx(totals["runtime"] / totals["bare"] - 1)
    with open(tmp_path / "r.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(report["rows"]) == 4 and set(rep.CSV_FIELDS) == set(table[0])
    assert float(table[0]["p50_ms"]) == pytest.approx(rows[("forward", None, 4)]["p50_ms"])
    assert "gpt-mini [runtime]" in out and "limits 1 thr" in out


def test_device_runner_needs_neither_torch_nor_onnx(bundles, tmp_path):
    out = tmp_path / "enc.json"
    argv = ["bench", str(bundles("bert-mini")), *TINY, *TINY_LIMITS, "--threads", "1", "--sequence", "4"]
    argv += ["--json", str(out), "--batch", "1,2"]
    code = (
        "import sys, json, runpy; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
        f"sys.argv = {argv!r}\n"
        "try:\n    runpy.run_module('edgeformer.runtime.bench', run_name='__main__')\n"
        "except SystemExit as e:\n    status = e.code\n"
        "heavy = sorted(k for k, v in sys.modules.items() if v is not None and k.split('.')[0] in "
        "('torch', 'onnx', 'onnxscript', 'onnx_ir', 'click', 'matplotlib'))\n"
        "print(json.dumps({'status': status, 'heavy': heavy}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 0, "heavy": []}
    run = rep.read_report(out)["runs"][0]
    assert [(c["batch"], c["sequence"]) for c in run["cases"]] == [(1, 4), (2, 4)]
    assert run["limits"]["1"]["bandwidth"]["gbs"] > 0


def test_merge_two_runs_of_one_bundle_and_plot(bundles, tmp_path):
    args = [str(bundles("bert-mini")), *TINY, "--threads", "1", "--sequence", "4,8", "--no-limits", "--quiet"]
    for name in ("a", "b"):
        assert _runner(*args, "--label", "box", "--json", str(tmp_path / f"{name}.json"))[0] == 0
    merged, csv_path, png = tmp_path / "m.json", tmp_path / "m.csv", tmp_path / "m.png"
    code, out, _ = _runner(
        "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--baseline", "box/bert-mini",
        "--json", str(merged), "--csv", str(csv_path), "--plot", str(png),
    )  # fmt: skip
    assert code == 0, out
    report = rep.read_report(merged)
    assert [r["label"] for r in report["runs"]] == ["box", "box#2"]  # two runs on one machine stay apart
    assert {r["series"] for r in report["rows"]} == {"box/bert-mini", "box#2/bert-mini"}
    bases = {r["sequence"]: r for r in report["rows"] if r["series"] == "box/bert-mini"}
    for row in report["rows"]:
        if row["series"] == "box/bert-mini":
            assert row["speedup"] == 1.0
        else:
            base = bases[row["sequence"]]
            assert row["speedup"] == pytest.approx(base["p50_ms"] / row["p50_ms"])
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
    assert len(list(csv.DictReader(csv_path.open()))) == 4
    again = rep.merge([report, rep.read_report(tmp_path / "a.json")])  # a merged report merges again
    assert [r["label"] for r in again["runs"]] == ["box", "box#2", "box#3"]


def test_plot_without_matplotlib_is_a_clear_error_before_measuring(bundles, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = _runner(str(bundles("bert-mini")), "--plot", str(tmp_path / "p.png"), "--json", str(tmp_path / "j"))
    err = err or capsys.readouterr().err
    assert code == 1 and "pip install 'edgeformer[plot]'" in err
    assert not (tmp_path / "j").exists() and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sequence", "4096"], "longer than the model's max_positions 128"),
        (["--prompt", "100", "--new-tokens", "100"], "--new-tokens 100 exceeds the model's max_positions 128"),
        (["--prompt", "128"], "--prompt 128 leaves no room"),
    ],
)
def test_bad_sweeps_are_clear_errors(bundles, capsys, args, message):
    code, _, err = _runner(str(bundles("gpt-mini")), "--no-limits", *args, capsys=capsys)
    assert code == 1 and message in err and "Traceback" not in err


def test_bad_input_is_a_clear_error(bundles, tmp_path, capsys):
    code, _, err = _runner(str(tmp_path / "missing"), capsys=capsys)
    assert code == 1 and "is not a bundle directory" in err
    code, _, err = _runner(str(bundles("bert-mini")), "--prompt", "4", "--no-limits", capsys=capsys)
    assert code == 1 and "does not generate" in err
    code, _, err = _runner(str(bundles("bert-mini")), "--providers", "nnapi", "--no-limits", capsys=capsys)
    assert code == 1 and "execution provider 'nnapi'" in err  # strict: never a silent CPU run
    for bad, why in (("--threads", "0"), ("--sequence", "8,x"), ("--batch", "-1"), ("--loop", "fast")):
        with pytest.raises(SystemExit) as exit_info:
            _runner(str(bundles("bert-mini")), bad, why)
        assert exit_info.value.code == 2
        assert f"argument {bad}" in capsys.readouterr().err
    (tmp_path / "x.json").write_text('{"not": "a report"}')
    code, _, err = _runner("merge", str(tmp_path / "x.json"), capsys=capsys)
    assert code == 1 and "not an edgeformer benchmark report" in err
    code, _, err = _runner("merge", str(tmp_path / "nope.json"), capsys=capsys)
    assert code == 1 and "no such benchmark report" in err


# ----- edgeformer bench: variants side by side -------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def card_report(bundles, tmp_path_factory):
    """`edgeformer bench gpt-mini` with torch eager, the card's unfused export and the fused bundle,
    two repetitions round-robin."""
    out = tmp_path_factory.mktemp("cli")
    result = _cli(
        "gpt-mini", str(bundles("gpt-mini")), "--variants", "unfused", "--no-check",
        "--cache-dir", str(out / "cache"), "--repeats", "2", "--iterations", "2", "--warmup", "1",
        "--sequence", "4,8", "--prompt", "3", "--new-tokens", "4", "--gen-runs", "1", "--threads", "1",
        *TINY_LIMITS, "-o", str(out / "r.json"), "--csv", str(out / "r.csv"), "--plot", str(out / "r.png"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_bench_card_variants_side_by_side(card_report):
    out, output = card_report
    report = rep.read_report(out / "r.json")
    assert [r["variant"] for r in report["runs"]] == ["torch", "unfused", "gpt-mini"] and report["baseline"] == "torch"
    assert [r["model"]["runtime"] for r in report["runs"]] == ["torch eager", "onnxruntime", "onnxruntime"]
    for run in report["runs"]:
        assert run["repetitions"] == 2 and len(run["session"]["create_s"]) == 2
        assert run["limits"]["1"]["bandwidth"]["gbs"] > 0
        for case in run["cases"]:
            if case["kind"] == "forward":
                assert len(case["samples_s"]) == 4  # 2 iterations x 2 processes, pooled
            else:
                assert len(case["runs"]) == 2
    unfused = report["runs"][1]["model"]
    assert unfused["target"] == "unfused-fp32" and unfused["path"].startswith(str((out / "cache").resolve()))
    rows = report["rows"]
    loops = {(r["variant"], r["loop"]) for r in rows if r["kind"] == "generate"}
    assert loops == {("torch", "torch"), *((v, loop) for v in ("unfused", "gpt-mini") for loop in ("runtime", "bare"))}
    for row in rows:
        if row["variant"] == "torch":
            assert row["speedup"] == 1.0
        if row["kind"] == "generate":
            assert row["tokens_match_baseline"] is True  # fp32 greedy tokens identical to torch's
    fwd = {(r["variant"], r["sequence"]): r for r in rows if r["kind"] == "forward"}
    fused, eager = fwd[("gpt-mini", 8)], fwd[("torch", 8)]
    assert fused["speedup"] == pytest.approx(eager["p50_ms"] / fused["p50_ms"])
    # each repetition's own figure is kept, and ratios are also taken within each repetition
    assert len(fused["per_repetition"]) == 2
    assert len(report["runs"][0]["limits"]["1"]["bandwidth"]["per_repetition"]) == 2
    within = [e / f for e, f in zip(eager["per_repetition"], fused["per_repetition"], strict=True)]
    assert fused["speedup_paired"] == pytest.approx(sum(within) / 2)  # the median of two
    assert all(r["bandwidth_fraction_paired"] > 0 for r in rows if r["kind"] == "generate")
    assert "speedup vs torch" in output and "unfused [bare]" in output and "rep 2/2: gpt-mini" in output
    assert (out / "r.png").read_bytes()[:8] == PNG and len(list(csv.DictReader((out / "r.csv").open()))) == len(rows)


def test_paired_ratios_follow_the_machine_drift_that_pooled_medians_miss():
    # variant b is 2x faster than a in every repetition, but the machine was 4x slower during the
    # second repetition: pooling the samples blurs that, pairing within repetitions does not
    a = {"run": "m", "kind": "forward", "per_repetition": [1.0, 4.0, 1.1]}
    b = {"run": "m", "kind": "forward", "per_repetition": [0.5, 2.0, 0.55]}
    assert rep.paired_ratio(a, b) == pytest.approx(2.0)
    assert rep.paired_ratio(a, {**b, "run": "other machine"}) is None  # repetitions pair within a run
    assert rep.paired_ratio(a, {**b, "per_repetition": [0.5, 2.0]}) is None
    assert rep.paired_ratio({**a, "per_repetition": [1.0]}, {**b, "per_repetition": [0.5]}) is None  # one: pooled
    assert rep.ratio(a, b) == pytest.approx(2.0)
    one = {"run": "m", "kind": "forward", "per_repetition": [1.0], "p50_ms": 3.0}
    assert rep.ratio(one, {**one, "p50_ms": 1.5}) == pytest.approx(2.0)  # one repetition: the pooled medians


def test_cli_bench_reuses_the_cache_and_bundles_without_torch(card_report, bundles):
    out, _ = card_report
    result = _cli(
        "gpt-mini", "--variants", "unfused", "--no-torch", "--no-check", "--cache-dir", str(out / "cache"),
        "--repeats", "1", "--iterations", "2", "--sequence", "4", "--no-limits", "--threads", "1", "--loop", "bare",
        "--prompt", "2", "--new-tokens", "2", "--no-forward", "--json", str(out / "gen.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "unfused: cached bundle" in result.output and "exporting" not in result.output
    assert {c["kind"] for c in rep.read_report(out / "gen.json")["runs"][0]["cases"]} == {"generate"}
    result = _cli(
        str(bundles("bert-mini")), "--repeats", "1", "--iterations", "2", "--sequence", "4", "--no-limits",
        "--threads", "1", "--baseline", "bert-mini", "--json", str(out / "bert.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = rep.read_report(out / "bert.json")
    assert [r["variant"] for r in report["runs"]] == ["torch", "bert-mini"]  # torch rebuilt from the manifest
    by = {r["variant"]: r for r in report["rows"]}
    assert by["bert-mini"]["speedup"] == 1.0
    assert by["torch"]["speedup"] == pytest.approx(by["bert-mini"]["p50_ms"] / by["torch"]["p50_ms"])


def test_cli_bench_bad_input_is_a_message(bundles, tmp_path):
    result = _cli("no-such-model")
    assert result.exit_code == 1 and "neither a bundle directory nor a model card" in result.output
    result = _cli(str(tmp_path / "missing/"))
    assert result.exit_code == 1 and "is not a bundle directory" in result.output
    result = _cli(str(bundles("bert-mini")), "--baseline", "fused")
    assert result.exit_code == 1 and "--baseline 'fused' is not a variant" in result.output
    result = _cli("gpt-mini", "--variants", "no-such-target", "--cache-dir", str(tmp_path))
    assert result.exit_code == 1 and "unknown target 'no-such-target'" in result.output
    result = _cli(str(bundles("bert-mini")), "--variants", "cpu-fp32")
    assert result.exit_code == 1 and "bundles are measured as given" in result.output
    result = _cli(str(bundles("bert-mini")), "--threads", "two")
    assert result.exit_code == 2 and "'two' is not an integer" in result.output
    result = _cli(str(bundles("bert-mini")), "--prompt", "4", "--no-torch")
    assert result.exit_code == 1 and "does not generate" in result.output
    assert "Traceback" not in result.output


def test_fusion_latency_floor_graph_holds_every_product_of_the_card(tmp_path):
    """bench/fusion_latency.py's gemm floor: the card's weight products and two per attention block."""
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from fusion_latency import floor_graph

    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_card, resolve_target

    card = resolve_card("bert-mini")
    export_bundle(source_from_card(card), resolve_target("unfused-fp32"), tmp_path / "plain", check=False)
    floor_graph(str(tmp_path / "plain" / "model.onnx"), card.config, tmp_path / "floor.onnx")
    model = onnx.load(str(tmp_path / "floor.onnx"))
    d, ff = card.config.d_model, card.config.d_ff or 4 * card.config.d_model
    weights = sorted(tuple(i.dims) for i in model.graph.initializer)
    layers = card.config.n_layers
    assert weights == sorted([(d, d)] * 4 * layers + [(d, ff), (ff, d)] * layers)  # q, k, v, out; FFN
    assert [n.op_type for n in model.graph.node] == ["MatMul"] * (6 * layers + 2 * layers)
    session = ort.InferenceSession(str(tmp_path / "floor.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([5 if d == "S" else d for d in i.shape]).astype(np.float32)
        for i in session.get_inputs()
    }
    out = session.run(None, feeds)
    scores = out[6 * layers]  # the first attention block's q k^T: (1, heads, S, S)
    assert scores.shape == (1, card.config.n_heads, 5, 5)


@pytest.mark.parametrize("card_name", ["bert-mini", "gpt-mini"])
def test_fusion_latency_headroom_graphs_cut_one_kind_of_work_each(tmp_path, card_name):
    """bench/fusion_headroom.py: each ablation removes every op of its kind and still runs."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from fusion_headroom import ABLATIONS, ablated_graph

    from edgeformer.export.graphs import make_inputs
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_card, resolve_target

    card = resolve_card(card_name)
    export_bundle(source_from_card(card), resolve_target("cpu-fp32"), tmp_path / "fused", check=False)
    fused = str(tmp_path / "fused" / "model.onnx")
    before = Counter(n.op_type for n in onnx.load(fused, load_external_data=False).graph.node)
    attention = before["Attention"] + before["MultiHeadAttention"]
    assert before["LayerNormalization"] and before["BiasGelu"] and attention
    feeds = make_inputs(source_from_card(card).plans[0], {"batch": 1, "sequence": 6, "past_sequence": 0}, seed=0)
    full = ort.InferenceSession(fused, providers=["CPUExecutionProvider"])
    reference = full.run(None, {i.name: feeds[i.name] for i in full.get_inputs()})
    gone = {
        "cut-norms": ("LayerNormalization",),
        "cut-gelu": ("BiasGelu",),
        "cut-attention": ("Attention", "MultiHeadAttention"),
    }
    for ablation in ABLATIONS:
        out = tmp_path / f"{ablation}.onnx"
        cut = ablated_graph(fused, ablation, out)
        after = Counter(n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node)
        assert cut == sum(before[op] for op in gone[ablation]) and not any(after[op] for op in gone[ablation])
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
        assert [o.shape for o in outputs] == [r.shape for r in reference]  # same interface, other numbers
        assert not np.allclose(outputs[0], reference[0])


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers (test-only) not installed")
def test_torchscript_fusion_bench_counts_checks_and_pairs(tmp_path):
    """bench/torchscript_fusion.py on the tiny size: what each tool fused, the numbers against the
    unfused graph, and one paired ratio per repetition and shape."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from torchscript_fusion import main as torchscript_fusion

    out = tmp_path / "ts.json"
    (result,) = torchscript_fusion(
        [
            "gpt2",
            "--size",
            "tiny",
            "--reps",
            "2",
            "--iters",
            "1",
            "--seq",
            "5",
            "--work",
            str(tmp_path),
            "--json",
            str(out),
        ]
    )
    assert result["fused"]["edgeformer"] == {"attention": 2, "layer_norm": 5, "gelu": 2}
    assert result["fused"]["ort-optimizer"]["attention"] == 0  # its GPT-2 patterns miss this export
    assert all(e < 1e-4 for e in result["max_rel_error"][5].values())
    assert set(result["ratio"][5]) == {"unfused", "ort-optimizer"} and all(r > 0 for r in result["ratio"][5].values())
    assert json.loads(out.read_text())["results"][0]["median_ms"]["5"]["edgeformer"] > 0

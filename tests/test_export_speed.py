"""A fast export that keeps every check (issue #21): comparisons without float64 copies, torch outputs
and greedy tokens computed once per export and reused by every check, the exporter's optimizer not run
twice, and a progress line with an estimate on long parity checks."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from edgeformer import parity, progress
from edgeformer.compare import compare
from edgeformer.export.graphs import card_cases
from edgeformer.export.source import source_from_card
from edgeformer.pipeline import export_bundle
from edgeformer.zoo import resolve_card, resolve_target
from tests.conftest import card_config


def test_compare_makes_no_float64_copy_and_gives_the_float64_numbers():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1_000_000).astype(np.float32) * 3
    got = ref + rng.standard_normal(ref.size).astype(np.float32) * 1e-3
    tracemalloc.start()
    report = compare("logits", ref, got, 1e-4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # one float32 difference (4 MB); a float64 copy of either side alone would be 8 MB
    assert peak < 1.5 * ref.nbytes, peak
    r, g = ref.astype(np.float64), got.astype(np.float64)
    assert report.max_abs == float(np.abs(r - g).max())
    assert report.max_rel == report.max_abs / float(np.abs(r).max())
    want_cos = float((r * g).sum() / (np.linalg.norm(r) * np.linalg.norm(g)))
    assert abs(report.cosine - want_cos) < 1e-12 and not report.ok  # 3e-3 of scale 1 > 1e-4


def test_compare_still_names_nan_and_inf_in_float32():
    both = np.array([[1.0, np.nan, np.inf, -np.inf]], dtype=np.float32)
    report = compare("logits", both, both.copy(), 1e-4)
    assert not report.ok and report.non_finite == "torch source 1 NaN, 2 inf; ONNX 1 NaN, 2 inf"
    assert compare("x", np.ones(4, np.float32), np.ones(4, np.float32), 0.0).ok
    assert compare("x", np.zeros(0, np.float32), np.zeros(0, np.float32), 0.0).ok


def test_progress_estimates_the_time_left_from_the_steps_done(monkeypatch):
    ticks = iter([0.0, 1.0, 2.0, 5.0, 9.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(ticks))
    lines: list[str] = []
    p = progress.Progress("model.onnx: case", 4, lines.append, quiet_for=1.5)  # started at 0.0
    p.step("batch 1, sequence 1")  # 1.0: quiet (under 1.5 s so far)
    p.step("batch 1, sequence 7")  # 2.0: 2 done in 2 s, 2 left
    p.step("batch 2, sequence 7")  # 5.0: 3 done in 5 s, 1 left
    p.step("batch 2, sequence 64")  # 9.0: the last, said by the stage's own line
    assert lines == [
        "  model.onnx: case 2/4 done (batch 1, sequence 7), 2.0 s so far, ~2 s left",
        "  model.onnx: case 3/4 done (batch 2, sequence 7), 5.0 s so far, ~2 s left",
    ]


def small_encoder():
    card = resolve_card("bert-mini")
    cfg = card.config.replace(max_positions=16, n_layers=1)
    return source_from_card(dataclasses.replace(card, config=cfg, name="small-mini"))


def test_int8_export_runs_torch_once_per_case_and_prints_progress(tmp_path, monkeypatch):
    calls: list[int] = []
    real_run = parity.run_torch
    monkeypatch.setattr(parity, "run_torch", lambda plan, inputs: calls.append(1) or real_run(plan, inputs))
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    lines: list[str] = []
    source = small_encoder()
    manifest = export_bundle(source, resolve_target("cpu-int8"), tmp_path / "b", log=lines.append)
    cases = len(source.plans[0].cases)
    # three checks judge these shapes (fp32 graphs, the precision search, the int8 bundle); torch runs once each
    # batch 1 at sequence 1, 7 and 16; batch 2 at the short lengths only (1, 7)
    assert len(calls) == cases == 5, len(calls)
    assert manifest["parity"]["ok"] and len(manifest["parity"]["cases"]) == cases
    assert {"batch": 2, "sequence": 16} not in source.plans[0].cases
    progress_lines = [x for x in lines if x.startswith("  model.onnx: case ")]
    assert progress_lines[0].startswith("  model.onnx: case 1/5 done (batch 1, sequence 1), "), lines
    assert progress_lines[-1].startswith("  model.onnx: case 4/5 done (batch 2, sequence 1), "), lines
    assert all(x.endswith(" s left") for x in progress_lines)


def test_greedy_tokens_of_the_torch_source_are_generated_once_per_export(monkeypatch):
    source = source_from_card(resolve_card("gpt-mini"))
    calls: list[int] = []
    real_greedy = parity.torch_greedy
    monkeypatch.setattr(parity, "torch_greedy", lambda *a: calls.append(1) or real_greedy(*a))
    monkeypatch.setattr(
        parity, "greedy_decoder", lambda _s, prompt, steps, **_kw: np.zeros((prompt.shape[0], steps), int)
    )
    memo: dict = {}
    first = parity.generation_parity(source, {"model": None}, 4, memo=memo)
    second = parity.generation_parity(source, {"model": None}, 4, memo=memo)
    assert first == second and len(calls) == 1 and len(memo) == 1
    parity.generation_parity(source, {"model": None}, 5, memo=memo)  # another length: generated
    assert len(calls) == 2


def test_an_export_that_fuses_traces_without_the_exporter_optimizer(tmp_path, monkeypatch):
    from edgeformer import pipeline

    seen: list[bool] = []
    real_trace = pipeline.trace
    monkeypatch.setattr(
        pipeline,
        "trace",
        lambda *a, optimize=True, **kw: seen.append(optimize) or real_trace(*a, optimize=optimize, **kw),
    )
    manifest = export_bundle(small_encoder(), resolve_target("cpu-fp32"), tmp_path / "b", check=False)
    assert seen == [False]  # the fuse stage's cleanup pass runs the same optimizer
    assert manifest["fusions"]["model"]["passes"][0]["name"] == "cleanup"
    assert manifest["fusions"]["model"]["passes"][0]["rewrites"] > 0


def test_fusion_passes_print_progress_with_an_estimate(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    lines: list[str] = []
    manifest = export_bundle(small_encoder(), resolve_target("cpu-fp32"), tmp_path / "b", check=False, log=lines.append)
    n = len(manifest["fusions"]["model"]["passes"])
    steps = [x for x in lines if x.startswith("  fusion pass ")]
    assert len(steps) == n - 1 and steps[0].startswith(f"  fusion pass 1/{n} done (cleanup), "), lines
    assert all(x.endswith(" s left") for x in steps)


@pytest.mark.parametrize(
    ("card", "graph"), [("gpt-mini", "model"), ("bert-mini", "model"), ("transformer-mini", "decoder")]
)
def test_the_full_length_is_checked_at_batch_1_and_batch_2_only_short(card, graph):
    """Batch 2 at the card's full length cost as much as every other case together (GPT-2-small: ~8 s
    of torch and onnxruntime); the length is shown at batch 1, batching and padding at the short lengths."""
    cases = card_cases(card_config(card, max_positions=64), graph)
    assert {c["sequence"] for c in cases if c["batch"] == 1 and not c.get("past_sequence")} == {1, 7, 64}
    assert {c["sequence"] for c in cases if c["batch"] == 2} == {1, 7}
    pasts = {(c["batch"], c["past_sequence"]) for c in cases if c.get("past_sequence")}
    # decoders: a step after a short cache at both batches, after the longest cache at batch 1
    assert pasts == (set() if card == "bert-mini" else {(1, 7), (1, 63), (2, 7)})

"""``edgeformer bench``'s orchestrator: variants side by side, each measured in processes of its own.

Every measurement is a fresh worker process (``worker``, started by the one process harness,
``harness``), its settings sent as JSON: the device runner for bundles, the torch worker for torch
eager, the machine's limits once per repetition. Processes run one at a time, round-robin over the
repetitions (A rep 1, B rep 1, ..., A rep 2, ...) so that all variants share the machine's drift.
Repetitions of a variant are pooled (every sample kept) and each case is reported as a ratio to the
baseline variant. ``bench`` is the whole command as one function.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeformer.benchmark import report, stats, worker
from edgeformer.benchmark.harness import run_job
from edgeformer.benchmark.options import Limits, Settings
from edgeformer.benchmark.settings import to_json
from edgeformer.benchmark.variants import BenchError, Log, Variant, plan_variants, resolve_for_all


def variant_job(variant: Variant, settings: Settings, label: str) -> dict[str, Any]:
    """The worker's request that measures ``variant`` (see ``worker``)."""
    job: dict[str, Any] = {"label": label, **to_json(settings)}
    if variant.kind == "torch":
        bundle = str(variant.bundle) if variant.bundle else None
        return job | {"kind": "torch", "bundle": bundle, "card": variant.card, "weights_seed": variant.weights_seed}
    return job | {"kind": "onnx", "bundle": str(variant.bundle), "variant": variant.name}


def limits_job(settings: Settings, limits: Limits, label: str) -> dict[str, Any]:
    return {"kind": "limits", "label": label, **to_json(settings, limits)}


def _in_worker(job: dict[str, Any], what: str, timeout: float | None) -> dict[str, Any]:
    return run_job(worker.ARGV, job, what=what, timeout=timeout)


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run from the repetitions of a variant: samples pooled case by case, summaries recomputed,
    session times and peak memory of every process kept."""
    first = copy.deepcopy(runs[0])
    keys = [report.case_key(c) for c in first["cases"]]
    for other in runs[1:]:
        if [report.case_key(c) for c in other["cases"]] != keys:
            raise BenchError(f"repetitions of {first['variant']} measured different cases; cannot pool them")
    for i, case in enumerate(first["cases"]):
        # each repetition's own figure, for ratios paired within a repetition (see report.rows)
        summaries = [r["cases"][i]["summary"] for r in runs]
        forward = case["kind"] == "forward"
        case["per_repetition"] = [x["latency_s"]["p50"] if forward else x["tokens_per_s"] for x in summaries]
        if case["kind"] == "forward":
            case["samples_s"] = [s for r in runs for s in r["cases"][i]["samples_s"]]
            case["summary"] = stats.forward_summary(case["samples_s"], case["batch"], case["sequence"])
        else:
            case["runs"] = [g for r in runs for g in r["cases"][i]["runs"]]
            if "loops_agree" in case:
                case["loops_agree"] = all(r["cases"][i]["loops_agree"] for r in runs)
            case["summary"] = stats.generation_summary(case["runs"], case["batch"])
    first["repetitions"] = len(runs)
    first["session"]["create_s"] = [s for r in runs for s in r["session"]["create_s"]]
    peaks = [r["memory"]["peak_rss_bytes"] for r in runs]
    first["memory"]["peak_rss_bytes_per_process"] = peaks
    first["memory"]["peak_rss_bytes"] = max((p for p in peaks if p is not None), default=None)
    return first


def best_limits(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The limits of several processes: per thread count and measure, the best figure, all samples,
    and each process's own figure (``per_repetition``, in the order of the runs)."""
    out: dict[str, Any] = {}
    for run in runs:
        for threads, found in run["limits"].items():
            for name, lim in found.items():
                unit = next(k for k in ("gflops", "gops", "gbs") if k in lim)
                have = out.setdefault(threads, {}).get(name)
                if have is None:
                    out[threads][name] = copy.deepcopy(lim) | {"per_repetition": [lim[unit]]}
                else:
                    have["samples_s"] += lim["samples_s"]
                    have[unit] = max(have[unit], lim[unit])
                    have["per_repetition"].append(lim[unit])
    return out


def measure(
    variants: Sequence[Variant],
    settings: Settings,
    *,
    repeats: int = 3,
    limits: Limits | None = None,
    label: str | None = None,
    timeout: float | None = None,
    log: Log = lambda _m: None,
) -> list[dict[str, Any]]:
    """Round-robin over repetitions: each variant (and the limits) in a fresh process, one at a
    time, each given ``timeout`` seconds. Returns one pooled run per variant, each carrying the
    limits measured in this run."""
    limits = limits or Limits()
    if repeats < 1:
        raise BenchError(f"--repeats must be at least 1, got {repeats}")
    label = label or stats.machine()["hostname"]
    per_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    limit_runs = []
    for rep in range(repeats):
        if limits.enabled:
            t0 = time.perf_counter()
            limit_runs.append(_in_worker(limits_job(settings, limits, label), "measuring the limits", timeout))
            log(f"rep {rep + 1}/{repeats}: limits ({time.perf_counter() - t0:.1f} s)")
        for v in variants:
            t0 = time.perf_counter()
            per_variant[v.name].append(_in_worker(variant_job(v, settings, label), f"variant {v.name}", timeout))
            log(f"rep {rep + 1}/{repeats}: {v.name} ({time.perf_counter() - t0:.1f} s)")
    found = best_limits(limit_runs)
    runs = []
    for v in variants:
        run = combine(per_variant[v.name])
        run["variant"] = v.name
        run["limits"] = found
        run["limits_measured"] = "in separate processes, once per repetition (best of all)" if found else None
        runs.append(run)
    return runs


def bench(
    models: Sequence[str],
    settings: Settings,
    *,
    variants: Sequence[str] | None = None,
    with_torch: bool = True,
    baseline: str | None = None,
    repeats: int = 3,
    limits: Limits | None = None,
    cache_dir: Path | None = None,
    check: bool = True,
    seed: int = 0,
    label: str | None = None,
    timeout: float | None = None,
    log: Log = lambda _m: None,
) -> dict[str, Any]:
    """``edgeformer bench``: plan the variants of ``models`` (bundles, or one card's exports, and torch
    eager), resolve one set of sweeps for all, measure them round-robin; the report."""
    planned = plan_variants(
        models, variants=variants, with_torch=with_torch, cache_dir=cache_dir, check=check, seed=seed, log=log
    )
    names = [v.name for v in planned]
    base = baseline or names[0]
    if base not in names:
        raise BenchError(f"--baseline {base!r} is not a variant; variants: {', '.join(names)}")
    concrete = resolve_for_all(planned, settings)
    log(f"variants: {', '.join(names)}; {repeats} repetitions, round-robin")
    runs = measure(planned, concrete, repeats=repeats, limits=limits, label=label, timeout=timeout, log=log)
    return report.new_report(runs, baseline=base)

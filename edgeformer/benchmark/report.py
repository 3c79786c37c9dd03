"""Benchmark reports: statistics, the machine and versions, rows, ratios, merging, CSV, tables, plots.

A report (``schema`` ``edgeformer-bench/1``) is what every benchmark writes::

    {"schema": "edgeformer-bench/1", "created": ..., "baseline": "torch" | null,
     "runs": [RUN, ...],        # one per variant and device: everything measured, every raw sample
     "rows": [ROW, ...]}        # one flat line per run and case: the summaries, and speedups vs the baseline

    RUN = {"label": device or run name, "variant": "cpu-fp32", "machine": {...}, "versions": {...},
           "settings": {...}, "model": {name, family, precision, size_bytes, weight_bytes, ...},
           "session": {"create_s": [...], ...}, "memory": {"peak_rss_bytes", ...},
           "limits": {"<threads>": {"matmul_fp32": {"gflops", "samples_s"}, "matmul_int8": {"gops", ...},
                                    "bandwidth": {"gbs", ...}}},
           "cases": [CASE, ...]}
    CASE = {"kind": "forward", "graph", "threads", "batch", "sequence", "samples_s": [...], "summary": {...}}
         | {"kind": "generate", "loop": "runtime" | "bare" | "torch", "threads", "batch", "prompt",
            "new_tokens", "runs": [{"token_s": [...]}], "tokens": [[...]], "summary": {...}}
           (token_s: seconds from the start of the call to each new token; tokens: the first run's)

Reports merge (runs from several devices or repetitions side by side); rows are always derived from
runs, so a merged report is summarised the same way as a fresh one. Standard library and numpy
only; matplotlib (``pip install 'edgeformer[plot]'``) only for a plot (``plots``). Statistics and the
machine are in ``stats``, the table on screen in ``table``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeformer.runtime.errors import OptionError, RuntimeBundleError

SCHEMA = "edgeformer-bench/1"


class ReportError(RuntimeBundleError, ValueError):
    """A benchmark report file is missing, not JSON, or not a report of this schema."""


# ----- a report ------------------------------------------------------------------------------------


def new_report(runs: list[dict[str, Any]], baseline: str | None = None) -> dict[str, Any]:
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baseline": baseline,
        "runs": runs,
    }
    report["rows"] = rows(report)
    return report


# ----- rows: one line per run and case ------------------------------------------------------------

KEY_FIELDS = ("kind", "graph", "loop", "threads", "batch", "sequence", "prompt", "new_tokens")
CSV_FIELDS = (
    "series",
    "run",
    "variant",
    *KEY_FIELDS,
    "n",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "stdev_ms",
    "sequences_per_s",
    "ttft_p50_ms",
    "per_token_p50_ms",
    "tokens_per_s",
    "e2e_tokens_per_s",
    "aggregate_tokens_per_s",
    "bandwidth_limit_tokens_per_s",
    "bandwidth_fraction",
    "bandwidth_fraction_paired",
    "overhead_vs_bare",
    "tokens_match_baseline",
    "speedup",
    "speedup_paired",
)


def case_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in KEY_FIELDS)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def series_name(run: dict[str, Any], multi_label: bool) -> str:
    return f"{run['label']}/{run['variant']}" if multi_label else str(run["variant"])


def _bandwidth_limit(run: dict[str, Any], threads: int) -> float | None:
    """Tokens/s per sequence the measured weight-reading bandwidth allows: bandwidth / weight bytes."""
    limit = (run.get("limits") or {}).get(str(threads), {}).get("bandwidth")
    weight = (run.get("model") or {}).get("weight_bytes")
    if not limit or not weight:
        return None
    return limit["gbs"] * 1e9 / weight


def _case_row(run: dict[str, Any], case: dict[str, Any], series: str) -> dict[str, Any]:
    row: dict[str, Any] = {"series": series, "run": run["label"], "variant": run["variant"]}
    row.update({k: case.get(k) for k in KEY_FIELDS})
    s = case["summary"]
    if case["kind"] == "forward":
        lat = s["latency_s"]
        row.update({"n": lat["n"], **{f"{k}_ms": _ms(lat[k]) for k in ("p50", "p90", "p99", "mean", "stdev")}})
        row["sequences_per_s"] = s["sequences_per_s"]
    else:
        total = s["total_s"]
        row.update({"n": total["n"], **{f"{k}_ms": _ms(total[k]) for k in ("p50", "p90", "p99", "mean", "stdev")}})
        row["ttft_p50_ms"] = _ms(s["ttft_s"]["p50"])
        row["per_token_p50_ms"] = _ms(s["per_token_s"]["p50"]) if s["per_token_s"] else None
        for k in ("tokens_per_s", "e2e_tokens_per_s", "aggregate_tokens_per_s"):
            row[k] = s[k]
        limit = _bandwidth_limit(run, case["threads"])
        row["bandwidth_limit_tokens_per_s"] = limit
        row["bandwidth_fraction"] = s["tokens_per_s"] / limit if limit and s["tokens_per_s"] else None
        row["bandwidth_fraction_paired"] = _paired_bandwidth_fraction(run, case)
    row["per_repetition"] = case.get("per_repetition")
    return row


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Median over repetitions of row ``a``'s figure over row ``b``'s (p50 latency for forward
    cases, tokens/s for generation), each ratio taken within one repetition; None unless both rows
    come from the same run with the same number (>= 2) of repetitions."""
    pairs = _paired(a.get("per_repetition"), b.get("per_repetition")) if a.get("run") == b.get("run") else None
    return float(np.median([x / y for x, y in pairs])) if pairs else None


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Row ``a``'s figure over row ``b``'s (p50 latency for forward cases, tokens/s for generation):
    paired within repetitions when they allow it (``paired_ratio``), else of the pooled medians."""
    paired = paired_ratio(a, b)
    if paired is not None:
        return paired
    field = "p50_ms" if a["kind"] == "forward" else "tokens_per_s"
    return a[field] / b[field] if a.get(field) and b.get(field) else None


def _paired(mine: Any, theirs: Any) -> list[tuple[float, float]] | None:
    """(mine, theirs) per repetition, when both were measured in the same repetitions."""
    if not isinstance(mine, list) or not isinstance(theirs, list) or len(mine) != len(theirs) or len(mine) < 2:
        return None
    pairs = [(a, b) for a, b in zip(mine, theirs, strict=True) if a and b]
    return pairs if len(pairs) == len(mine) else None


def _paired_bandwidth_fraction(run: dict[str, Any], case: dict[str, Any]) -> float | None:
    """Median over repetitions of tokens/s over the limit measured in the same repetition (the
    limits process runs just before the variants of its repetition, so they share its drift)."""
    limit = (run.get("limits") or {}).get(str(case["threads"]), {}).get("bandwidth") or {}
    weight = (run.get("model") or {}).get("weight_bytes")
    pairs = _paired(case.get("per_repetition"), limit.get("per_repetition"))
    if not pairs or not weight:
        return None
    return float(np.median([tps * weight / (gbs * 1e9) for tps, gbs in pairs]))


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows of every run's cases, with the runtime's overhead over the bare loop and the
    speedup against the report's baseline series (when it has one).

    ``speedup`` compares the pooled medians. ``speedup_paired`` (runs of several repetitions)
    is the median over repetitions of the ratio within each repetition: the variants of one
    repetition run back to back, so a slow spell of the machine slows both sides of a ratio
    instead of one. On a shared VM it is the steadier figure; the table shows it when it exists."""
    runs = report["runs"]
    multi = len({r["label"] for r in runs}) > 1
    out = []
    tokens: dict[tuple, Any] = {}
    for run in runs:
        series = series_name(run, multi)
        for case in run["cases"]:
            row = _case_row(run, case, series)
            tokens[(series, case_key(row))] = case.get("tokens")
            out.append(row)
    by_series: dict[tuple, dict[str, Any]] = {(r["series"], case_key(r)): r for r in out}
    for row in out:
        if row["kind"] == "generate" and row["loop"] == "runtime":
            bare = by_series.get((row["series"], case_key({**row, "loop": "bare"})))
            if bare and bare["p50_ms"]:
                row["overhead_vs_bare"] = row["p50_ms"] / bare["p50_ms"] - 1.0
    baseline = report.get("baseline")
    if baseline:
        for row in out:
            base = _baseline_row(by_series, baseline, row)
            if base is None:
                continue
            if row["kind"] == "forward":
                row["speedup"] = base["p50_ms"] / row["p50_ms"]
            elif base.get("tokens_per_s") and row.get("tokens_per_s"):
                row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"]
            paired = paired_ratio(base, row) if row["kind"] == "forward" else paired_ratio(row, base)
            if paired:
                row["speedup_paired"] = paired
            mine, theirs = tokens.get((row["series"], case_key(row))), tokens.get((base["series"], case_key(base)))
            if mine is not None and theirs is not None:
                row["tokens_match_baseline"] = mine == theirs
    return out


def _baseline_row(by_series: dict[tuple, dict[str, Any]], baseline: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The baseline's row for the same case; for generation, the same loop when the baseline has
    it, else its runtime loop, else its only loop (torch eager has one: ``torch``)."""
    if row["kind"] == "forward":
        return by_series.get((baseline, case_key(row)))
    for loop in (row["loop"], "runtime", "bare", "torch"):
        found = by_series.get((baseline, case_key({**row, "loop": loop})))
        if found is not None:
            return found
    return None


def series_of(report: dict[str, Any]) -> list[str]:
    multi = len({r["label"] for r in report["runs"]}) > 1
    return [series_name(r, multi) for r in report["runs"]]


# ----- reading, merging, writing -------------------------------------------------------------------


def read_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such benchmark report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is not a JSON benchmark report ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("runs"), list):
        raise ReportError(f"{path} is not an edgeformer benchmark report (schema {SCHEMA!r} with runs)")
    return data


def merge(reports: Iterable[dict[str, Any]], baseline: str | None = None) -> dict[str, Any]:
    """One report holding the runs of all; labels that repeat (two runs on one machine) get
    ``#2``, ``#3``... so every series stays distinct. ``baseline`` names a series of the result."""
    runs: list[dict[str, Any]] = []
    used: set[str] = set()
    for report in reports:
        labels: dict[str, str] = {}  # this report's label -> its label in the merge
        for run in report["runs"]:
            label = run["label"]
            if label not in labels:
                new, i = label, 2
                while new in used:
                    new, i = f"{label}#{i}", i + 1
                labels[label] = new
                used.add(new)
            runs.append({**run, "label": labels[label]})
    if not runs:
        raise ReportError("nothing to merge: the reports hold no runs")
    merged = {"schema": SCHEMA, "runs": runs}
    names = series_of(merged)
    if baseline is not None and baseline not in names:
        raise OptionError(f"baseline {baseline!r} is not a series of the merged report; series: {', '.join(names)}")
    return new_report(runs, baseline)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, allow_nan=False) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_FIELDS})
    return out.getvalue()


def describe(row: dict[str, Any]) -> str:
    if row["kind"] == "forward":
        return f"{row['graph']} b{row['batch']} seq {row['sequence']}, {row['threads']} thr"
    return f"generate b{row['batch']} {row['prompt']}+{row['new_tokens']}, {row['threads']} thr"

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
only; matplotlib (``pip install 'edgeformer[plot]'``) only for ``plot``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeformer.io import atomic_path, write_text_atomic
from edgeformer.runtime.errors import OptionError, RuntimeBundleError

SCHEMA = "edgeformer-bench/1"
PERCENTILES = (50, 90, 99)


class ReportError(RuntimeBundleError, ValueError):
    """A benchmark report file is missing, not JSON, or not a report of this schema."""


# ----- statistics -----------------------------------------------------------------------------------


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """n, min, max, mean, stdev (sample, ddof=1; 0 for one sample) and p50/p90/p99 (numpy's linear
    interpolation between closest ranks) of samples in seconds."""
    if len(samples) == 0:
        raise OptionError("no samples to summarize")
    a = np.asarray(samples, dtype=np.float64)
    out: dict[str, float | int] = {"n": int(a.size), "min": float(a.min()), "max": float(a.max())}
    out["mean"] = float(a.mean())
    out["stdev"] = float(a.std(ddof=1)) if a.size > 1 else 0.0
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    return out


def forward_summary(samples: Sequence[float], batch: int, sequence: int) -> dict[str, Any]:
    """Latency statistics of one graph call, and throughput (sequences and tokens per second at the mean)."""
    s = summarize(samples)
    return {
        "latency_s": s,
        "sequences_per_s": batch / s["mean"],
        "tokens_per_s": batch * sequence / s["mean"],
    }


def generation_summary(runs: Sequence[dict[str, Any]], batch: int) -> dict[str, Any]:
    """From each run's token times (``token_s``: seconds from the call to each new token): time to
    first token, per-token latency (the gaps after the first token), decode tokens/s per sequence
    (median over runs of (N - 1) / (t_N - t_1)), end-to-end tokens/s (N / t_N), and aggregate
    tokens/s (decode tokens/s times the batch)."""
    ttft, total, gaps, decode_tps, e2e_tps = [], [], [], [], []
    for run in runs:
        times = np.asarray(run["token_s"], dtype=np.float64)
        ttft.append(float(times[0]))
        total.append(float(times[-1]))
        e2e_tps.append(times.size / times[-1])
        if times.size > 1:
            gaps.extend(np.diff(times).tolist())
            decode_tps.append((times.size - 1) / (times[-1] - times[0]))
    tps = float(np.median(decode_tps)) if decode_tps else None
    return {
        "ttft_s": summarize(ttft),
        "total_s": summarize(total),
        "per_token_s": summarize(gaps) if gaps else None,
        "tokens_per_s": tps,
        "e2e_tokens_per_s": float(np.median(e2e_tps)),
        "aggregate_tokens_per_s": tps * batch if tps is not None else None,
    }


# ----- the machine and the software ---------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo, plus machine-wide fields (ARM boards list
    Hardware/Model at the end) and the number of distinct (physical id, core id) pairs."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    cores = set()
    for block in text.split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
                fields.setdefault(key.strip(), value.strip())
        if "core id" in entry:
            cores.add((entry.get("physical id", "0"), entry["core id"]))
    fields["_physical_cores"] = str(len(cores)) if cores else ""
    return fields


def physical_cores() -> int:
    """Cores this process may use, counting each physical core once (what onnxruntime uses by default)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    physical = _cpuinfo().get("_physical_cores", "")
    return max(1, min(usable, int(physical))) if physical else max(1, usable)


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict[str, Any]:
    """CPU model, cores, instruction-set flags, memory and OS of this machine."""
    info = _cpuinfo()
    cpu = info.get("model name") or info.get("Model") or info.get("Hardware") or platform.processor() or "unknown"
    flags = (info.get("flags") or info.get("Features") or "").split()
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "physical_cores": physical_cores(),
        "flags": sorted(flags),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "system": platform.system(),
    }


def versions(**extra: str) -> dict[str, str]:
    """Versions of what measured: edgeformer, onnxruntime (and its providers), numpy, Python."""
    import onnxruntime as ort

    from edgeformer import __version__

    return {
        "edgeformer": __version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ",".join(ort.get_available_providers()),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        **extra,
    }


def current_rss_bytes() -> int | None:
    return _proc_status_kb("VmRSS")


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size: /proc (Linux, Android) or getrusage elsewhere."""
    peak = _proc_status_kb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB elsewhere


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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


def write_outputs(
    report: dict[str, Any], *, json_path: str | Path | None, csv_path: str | Path | None, plot_path: str | Path | None
) -> None:
    """Write the report's JSON, CSV and plot (each atomically; the plot first needs matplotlib)."""
    if plot_path is not None:
        plot(report, plot_path)
    if json_path is not None:
        write_text_atomic(json_path, to_json(report))
    if csv_path is not None:
        write_text_atomic(csv_path, to_csv(report))


# ----- on screen ------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def describe(row: dict[str, Any]) -> str:
    if row["kind"] == "forward":
        return f"{row['graph']} b{row['batch']} seq {row['sequence']}, {row['threads']} thr"
    return f"generate b{row['batch']} {row['prompt']}+{row['new_tokens']}, {row['threads']} thr"


def limits_line(run: dict[str, Any]) -> str:
    parts = []
    for threads, lim in sorted((run.get("limits") or {}).items(), key=lambda kv: int(kv[0])):
        parts.append(
            f"{threads} thr: fp32 {lim['matmul_fp32']['gflops']:.0f} GFLOP/s, int8 {lim['matmul_int8']['gops']:.0f} "
            f"GOP/s, weights {lim['bandwidth']['gbs']:.1f} GB/s"
        )
    return "; ".join(parts)


def table(report: dict[str, Any]) -> str:
    """The report as text: machine and limits per label, then the cases, each with one line per
    series (and loop): p50/p90, time to first token, tokens/s, fraction of the bandwidth limit,
    the runtime's overhead over the bare loop, and the speedup against the baseline."""
    lines = []
    for label in dict.fromkeys(r["label"] for r in report["runs"]):
        run = next(r for r in report["runs"] if r["label"] == label)
        m, ort_version = run["machine"], run["versions"]["onnxruntime"]
        lines.append(f"{label}: {m['cpu']}, {m['physical_cores']} cores ({m['os']}); onnxruntime {ort_version}")
        if limits_line(run):
            lines.append(f"  limits {limits_line(run)}")
    base = report.get("baseline")
    header: tuple[str, ...] = (
        "case",
        "series",
        "p50 ms",
        "p90 ms",
        "ttft ms",
        "tok/s",
        "of bw limit",
        "overhead vs bare",
        f"speedup vs {base}",
    )
    series = series_of(report)
    cases = list(dict.fromkeys(describe(r) for r in report["rows"]))
    loops = ("runtime", "bare", "torch")
    ordered = sorted(
        report["rows"],
        key=lambda r: (cases.index(describe(r)), series.index(r["series"]), loops.index(r.get("loop") or "runtime")),
    )
    body: list[tuple[str, ...]] = []
    last = None
    for r in ordered:
        ratio = r.get("speedup_paired") or r.get("speedup")
        speed = "-" if ratio is None else f"{ratio:.2f}x"
        if r.get("tokens_match_baseline") is False:
            speed += " (tokens differ)"
        body.append(
            (
                "" if describe(r) == last else describe(r),
                r["series"] + (f" [{r['loop']}]" if r["kind"] == "generate" else ""),
                _fmt(r["p50_ms"]),
                _fmt(r["p90_ms"]),
                _fmt(r.get("ttft_p50_ms")),
                _fmt(r.get("tokens_per_s"), ".1f"),
                _fmt(r.get("bandwidth_fraction_paired") or r.get("bandwidth_fraction"), ".1%"),
                "-" if r.get("overhead_vs_bare") is None else f"{r['overhead_vs_bare']:+.1%}",
                speed,
            )
        )
        last = describe(r)
    if not base:
        header, body = header[:-1], [b[:-1] for b in body]
    if any(r.get("speedup_paired") or r.get("bandwidth_fraction_paired") for r in report["rows"]):
        note = "speedups and bandwidth fractions: medians of the ratios within each repetition"
    else:
        note = ""
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for b in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip())
    if note:
        lines.append(f"({note})")
    return "\n".join(lines)


# ----- plots ------------------------------------------------------------------------------------------


NO_MATPLOTLIB = (
    "--plot needs matplotlib, which is not installed: pip install 'edgeformer[plot]' (or pip install matplotlib)"
)


def plot_available() -> None:
    """Raise OptionError now, before a long run, when ``plot`` would fail for want of matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OptionError(NO_MATPLOTLIB) from None


def plot(report: dict[str, Any], path: str | Path) -> None:
    """A PNG: p50 latency against sequence length per series (one line per series, graph, batch
    and thread count), and decode tokens/s per series for each generation case. Needs matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise OptionError(NO_MATPLOTLIB) from None
    forward = [r for r in report["rows"] if r["kind"] == "forward"]
    gen = [r for r in report["rows"] if r["kind"] == "generate" and r.get("tokens_per_s")]
    panels = [p for p, rows_ in (("latency", forward), ("tokens", gen)) if rows_]
    if not panels:
        raise OptionError("nothing to plot: the report has no forward or generation cases")
    fig = Figure(figsize=(7 * len(panels), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "latency":
            _latency_panel(ax, forward)
        else:
            _tokens_panel(ax, gen)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _varying(rows_: list[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    return [f for f in fields if len({r.get(f) for r in rows_}) > 1]


def _latency_panel(ax: Any, forward: list[dict[str, Any]]) -> None:
    extra = _varying(forward, ("graph", "batch", "threads"))
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in forward:
        lines.setdefault((r["series"], *(r[f] for f in extra)), []).append(r)
    for key, pts in lines.items():
        pts.sort(key=lambda r: r["sequence"])
        name = key[0] + "".join(f" {f[0]}{v}" if f != "graph" else f" {v}" for f, v in zip(extra, key[1:], strict=True))
        ax.plot([r["sequence"] for r in pts], [r["p50_ms"] for r in pts], marker="o", label=name)
    seqs = [r["sequence"] for r in forward]
    if max(seqs) >= 4 * min(seqs):
        ax.set_xscale("log", base=2)
    values = [r["p50_ms"] for r in forward if r["p50_ms"]]
    if values and max(values) > 20 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title("latency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _tokens_panel(ax: Any, gen: list[dict[str, Any]]) -> None:
    cases = list(dict.fromkeys(describe(r) for r in gen))
    bars = list(dict.fromkeys(f"{r['series']} [{r['loop']}]" for r in gen))
    width = 0.8 / len(bars)
    for i, bar in enumerate(bars):
        xs, ys = [], []
        for j, case in enumerate(cases):
            found = [r for r in gen if describe(r) == case and f"{r['series']} [{r['loop']}]" == bar]
            if found:
                xs.append(j + (i - (len(bars) - 1) / 2) * width)
                ys.append(found[0]["tokens_per_s"])
        ax.bar(xs, ys, width=width, label=bar)
    limits = {}
    for case in cases:  # one dashed line per case where the series agree on the limit (within 5%)
        at = [r["bandwidth_limit_tokens_per_s"] for r in gen if describe(r) == case]
        if at and all(at) and max(at) <= 1.05 * min(at):
            limits[case] = min(at)
    for j, case in enumerate(cases):
        if case in limits:
            ax.hlines(limits[case], j - 0.45, j + 0.45, colors="black", linestyles="dashed")
    ax.set_xticks(range(len(cases)), cases, fontsize="small")
    ax.set_ylabel("decode tokens/s per sequence")
    ax.set_title("generation (dashed: weight-bandwidth limit)" if limits else "generation")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")

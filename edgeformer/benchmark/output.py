"""A benchmark report on screen (the table: the machine and its limits, then one line per case and
series) and on disk (JSON, CSV and PNG, each written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeformer.benchmark.plots import plot
from edgeformer.benchmark.report import describe, series_of, to_csv, to_json
from edgeformer.io import write_text_atomic


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


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
    body = _body(ordered)
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


def _body(ordered: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One table line per row, the case named on its first line only."""
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
    return body


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

"""A benchmark report as a PNG (matplotlib, ``pip install 'edgeformer[plot]'``, only when asked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeformer.benchmark.report import describe
from edgeformer.io import atomic_path
from edgeformer.runtime.errors import OptionError

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

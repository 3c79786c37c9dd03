"""Long sequences: encoder latency and peak memory of global, local and sparse attention (issue #23).

    python bench/long_context.py --json long_context.json --png long_context.png        # base cards, quiet machine
    python bench/long_context.py --size tiny --json /tmp/lc.json --png /tmp/lc.png      # smoke run: S <= 256

Exports one encoder card per pattern (base: 768 wide, 12 heads, 12 layers; local window 257 and one global
token as local-encoder-base; sparse stride 128) twice: "masked", today's export (cpu-fp32: dense attention with
the pattern's (S x S) mask, fused into MultiHeadAttention), and "banded" (portable-fp32: nn/banded.py's blocked
products in standard ops, O(S * window)). Global attention has only the masked export. Each (bundle, S) runs in
a process of its own (onnxruntime, --threads intra-op threads, batch 1): p50 latency of --repeats runs after one
warm-up, and the process's peak resident memory (VmHWM). The summary gives banded / masked at each S and
time(2S) / time(S) per series (the issue's targets: local at 4096 >= 4x faster with <= 1/4 the memory;
time(8192) / time(4096) <= 2.2 for local and sparse). Weights are random: only time and memory mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "base": {"model": dict(d_model=768, n_heads=12, n_layers=12, vocab_size=30522), "window": 257, "stride": 128,
             "sequences": [512, 1024, 2048, 4096, 8192, 16384]},
    "tiny": {"model": dict(d_model=32, n_heads=2, n_layers=2, vocab_size=256), "window": 8, "stride": 8,
             "sequences": [32, 64, 128, 256]},
}  # fmt: skip
FORMS = {"masked": "cpu-fp32", "banded": "portable-fp32"}

MEASURE = """
import json, resource, sys, time
import numpy as np, onnxruntime as ort
path, s, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
feeds = {"input_ids": np.random.default_rng(0).integers(0, 200, (1, s)), "attention_mask": np.ones((1, s), np.int64)}
session.run(None, feeds)
times = []
for _ in range(repeats):
    t = time.perf_counter(); session.run(None, feeds); times.append(time.perf_counter() - t)
# VmHWM is this process image's own peak; ru_maxrss also counts the forking parent's (torch, the exports)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"p50_ms": 1e3 * sorted(times)[len(times) // 2], "peak_rss_bytes": peak * 1024}))
"""


def card(pattern: str, size: str) -> dict[str, Any]:
    """A card (as parse_card reads it) of an encoder with ``pattern`` at ``size``."""
    spec = SIZES[size]
    attention: dict[str, Any] = {"attention": pattern}
    if pattern == "local":
        attention.update(window=spec["window"], global_tokens=1)
    elif pattern == "sparse":
        attention.update(sparse_stride=spec["stride"])
    model = dict(family="encoder", max_positions=max(spec["sequences"]), positions="sinusoidal", activation="gelu",
                 norm="post", head="none", **spec["model"], **attention)  # fmt: skip
    return {"name": f"{pattern}-encoder-{size}", "model": model}


def export(pattern: str, form: str, size: str, root: Path) -> Path:
    from edgeformer.config import parse_card
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    out = root / f"{pattern}-{form}"
    source = source_from_card(parse_card(card(pattern, size)), memory_check=False, parity=False)
    export_bundle(source, resolve_target(FORMS[form]), out, check=False)
    return out


def measure(bundle: Path, sequence: int, threads: int, repeats: int) -> dict[str, Any]:
    """One (bundle, S) point in a process of its own: p50 latency and peak memory, or why it failed."""
    command = [sys.executable, "-c", MEASURE, str(bundle / "model.onnx"), str(sequence), str(threads), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"p50_ms": None, "peak_rss_bytes": None, "error": lines[-1] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """banded / masked per pattern and S (time and memory), and time(2S) / time(S) per series."""
    at = {(r["series"], r["sequence"]): r for r in rows if r.get("p50_ms")}
    out: list[dict[str, Any]] = []
    for (series, s), r in sorted(at.items()):
        pattern, form = series.split(" ")
        masked = at.get((f"{pattern} masked", s))
        if form == "banded" and masked is not None:
            out.append({"what": f"{pattern} banded / masked", "sequence": s,
                        "time": r["p50_ms"] / masked["p50_ms"],
                        "memory": r["peak_rss_bytes"] / masked["peak_rss_bytes"]})  # fmt: skip
        double = at.get((series, 2 * s))
        if double is not None:
            out.append({"what": f"{series} time(2S) / time(S)", "sequence": s, "time": double["p50_ms"] / r["p50_ms"]})
    return out


def run(size: str, patterns: list[str], threads: int, repeats: int, work: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for pattern in patterns:
        for form in ["masked"] if pattern == "global" else ["masked", "banded"]:
            print(f"exporting {pattern} ({form}) ...", file=sys.stderr, flush=True)
            bundle = export(pattern, form, size, work)
            for s in SIZES[size]["sequences"]:
                point = measure(bundle, s, threads, repeats)
                print(f"  S={s}: {point}", file=sys.stderr, flush=True)
                rows.append({"kind": "forward", "series": f"{pattern} {form}", "graph": "model", "batch": 1,
                             "threads": threads, "sequence": s, **point})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    patterns = ["global", "local", "sparse"]
    parser.add_argument("--patterns", nargs="+", choices=patterns, default=patterns)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="where the bundles go (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write rows and summary as JSON")
    parser.add_argument("--png", type=Path, help="plot latency against S (edgeformer/benchmark/plots.py, matplotlib)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = run(args.size, args.patterns, args.threads, args.repeats, work)
    report = {"size": args.size, "threads": args.threads, "cpu_count": os.cpu_count(), "rows": rows,
              "summary": summarize(rows)}  # fmt: skip
    for line in report["summary"]:
        print(json.dumps(line))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.png:
        from edgeformer.benchmark.plots import plot

        plot(report, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

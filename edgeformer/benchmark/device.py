"""The device runner's command line (``python -m edgeformer.runtime.bench``): onnxruntime and numpy only.

    python -m edgeformer.runtime.bench BUNDLE [--threads 1,2] [--batch 1,4] [--sequence 8,32,128]
        [--prompt 32] [--new-tokens 128] [--iterations 20 | --time-budget 10] [--json F] [--csv F] [--plot F.png]
    python -m edgeformer.runtime.bench limits [--threads 2] [--json F]
    python -m edgeformer.runtime.bench merge A.json B.json ... [--baseline SERIES] [--json F] [--csv F] [--plot F.png]

The measuring options are generated from the one declaration (``settings.OPTIONS``), the same one
``edgeformer bench`` takes its options from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from edgeformer.benchmark import output, plots, report, stats
from edgeformer.benchmark.options import count, limits_from_values, settings_from_values
from edgeformer.benchmark.runner import limits_run, run_bundle
from edgeformer.benchmark.settings import add_argparse_options, argparse_type, values_of
from edgeformer.benchmark.timing import Progress
from edgeformer.errors import EdgeformerError

PROG = "python -m edgeformer.runtime.bench"


def _outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="write the report (every sample) as JSON")
    parser.add_argument("--csv", type=Path, help="write one line per case as CSV")
    parser.add_argument("--plot", type=Path, help="write a PNG: latency against sequence length, tokens/s")


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--label", help=f"name of this {what} in reports (default: the host name)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _parser(command: str) -> argparse.ArgumentParser:
    if command == "merge":
        p = argparse.ArgumentParser(
            prog=f"{PROG} merge", description="Merge benchmark reports (devices, runs) into one comparison report."
        )
        p.add_argument("reports", nargs="+", type=Path, help="report JSON files")
        p.add_argument("--baseline", help="series the others are compared with (label/variant when labels differ)")
    elif command == "limits":
        p = argparse.ArgumentParser(prog=f"{PROG} limits", description="Measure fp32/int8 MatMul peak and bandwidth.")
        add_argparse_options(p, only=("threads", "spinning"))
        add_argparse_options(p, "limits", switch=False)
        _common(p, "run")
    else:
        p = argparse.ArgumentParser(
            prog=PROG,
            description="Benchmark an edgeformer bundle with onnxruntime and numpy only "
            "(subcommands: `limits`, `merge`; a bundle directory named like one: ./merge).",
        )
        p.add_argument("bundle", type=Path, help="bundle directory (from `edgeformer export`)")
        add_argparse_options(p)
        # --seed was the input seed's name; --seed seeds weights everywhere else, so it is unlisted
        p.add_argument("--seed", dest="input_seed", type=argparse_type(count(0, 2**64 - 1)), help=argparse.SUPPRESS)
        add_argparse_options(p, "limits")
        _common(p, "run")
        p.add_argument("--variant", help="name of this variant in reports (default: the bundle directory's name)")
    _outputs(p)
    return p


def _measure(command: str, args: argparse.Namespace) -> dict[str, Any]:
    if command == "merge":
        return report.merge([report.read_report(p) for p in args.reports], baseline=args.baseline)
    values = values_of(args)
    progress = Progress(enabled=not args.quiet)
    if command == "limits":
        settings = settings_from_values(values)
        threads = settings.threads or (stats.physical_cores(),)
        run = limits_run(
            threads, limits_from_values(values), spinning=settings.spinning, label=args.label, progress=progress
        )
    else:
        run = run_bundle(
            args.bundle,
            settings_from_values(values),
            limits=limits_from_values(values),
            label=args.label,
            variant=args.variant,
            progress=progress,
        )
    return report.new_report([run])


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line; returns the exit status (1 for a clear error, 2 for a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    command = argv[0] if argv and argv[0] in ("merge", "limits") else "bundle"
    args = _parser(command).parse_args(argv[1:] if command != "bundle" else argv)
    try:
        if args.plot is not None:
            plots.plot_available()
        result = _measure(command, args)
        output.write_outputs(result, json_path=args.json, csv_path=args.csv, plot_path=args.plot)
    except EdgeformerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    out.write(output.table(result) + "\n")
    for path in (args.json, args.csv, args.plot):
        if path is not None:
            out.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

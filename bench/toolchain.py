"""The README's comparison: torch eager, the standard toolchain and edgeformer, in one run per model.

    python bench/toolchain.py                       # bert-base (encoder) and gpt2-small (decoder)
    python bench/toolchain.py --decoder gpt2-small --no-encoder --repeats 3 --out bench-out/

Variants of each model card (random weights from seed 0), every one measured by
``edgeformer bench`` machinery: a process of its own per variant and repetition, round-robin, the
machine's limits (MatMul peak, weight-reading bandwidth) measured in the same run:

  torch             the torch source, eager (generation through its KV cache)
  toolchain-fp32    the standard toolchain: torch.onnx.export (edgeformer's unfused export: the dynamo
                    exporter, dynamic axes, KV cache) + onnxruntime.transformers optimize_model
  toolchain-int8    toolchain-fp32 + onnxruntime.quantization.quantize_dynamic(per_channel=True)
  qdyn-int8         quantize_dynamic(per_channel=True) applied to edgeformer's fused fp32 graph (the int8
                    baseline of issues #5 and #7: the same graph, only the quantizer differs)
  edgeformer-fp32   the cpu-fp32 target (fused)
  edgeformer-int8   the cpu-int8 target (fused, int8 within the accuracy budget)

ONNX variants run onnxruntime's CPU provider at graph optimization level "all"; generation uses
both the runtime's ``generate()`` and the bare loop over the same graph. Prints the table, then the
ratios the issues ask for; ``--out`` keeps the JSON (every sample), CSV and PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from baselines import toolchain_variants

from edgeformer.benchmark import orchestrator, output
from edgeformer.benchmark import report as report_mod
from edgeformer.benchmark import variants as bv
from edgeformer.benchmark.options import Limits, Settings


def log(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


def run_card(card_name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from edgeformer.zoo import resolve_card

    card = resolve_card(card_name)
    cache = work / "cache"
    exported = {
        name: bv.cached_export(card, target, cache, seed=0, check=True, log=log)
        for name, target in (("plain", bv.UNFUSED), ("edgeformer-fp32", "cpu-fp32"), ("edgeformer-int8", "cpu-int8"))
    }
    theirs = toolchain_variants(card, exported["plain"], exported["edgeformer-fp32"], work, log=log)
    variants = [bv.Variant("torch", "torch", card=card.name, weights_seed=0)]
    for name in ("toolchain-fp32", "toolchain-int8", "qdyn-int8"):
        variants.append(bv.Variant(name, "onnx", bundle=theirs[name]))
    for name in ("edgeformer-fp32", "edgeformer-int8"):
        variants.append(bv.Variant(name, "onnx", bundle=exported[name]))
    generates = card.config.family != "encoder"
    room = card.config.max_positions - args.prompt  # what a small card's positions leave after the prompt
    settings = Settings(
        threads=(args.threads,),
        sequences=None if generates else tuple(args.sequence),
        forward=not generates,
        generate=generates,
        prompts=(args.prompt,) if generates else None,
        new_tokens=(min(args.new_tokens, room),) if generates else None,
        iterations=args.iterations,
        gen_runs=args.gen_runs,
    )
    concrete = bv.resolve_for_all(variants, settings)
    runs = orchestrator.measure(variants, concrete, repeats=args.repeats, limits=Limits(), label=args.label, log=log)
    return report_mod.new_report(runs, baseline="torch")


def ratios(report: dict[str, Any]) -> list[str]:
    """The figures the issues ask for. Ratios are paired within each repetition (the variants of
    one repetition run back to back; ``edgeformer.benchmark.report.ratio``), falling back to the pooled medians
    when there is one repetition."""
    rows = report_mod.rows(report)
    lines = []

    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
        return report_mod.ratio(a, b) if a and b else None

    gen = {(r["series"], r["loop"]): r for r in rows if r["kind"] == "generate"}
    if gen:
        for series in ("torch", "toolchain-fp32", "toolchain-int8", "qdyn-int8", "edgeformer-fp32", "edgeformer-int8"):
            for loop in ("torch", "runtime", "bare"):
                if (series, loop) in gen:
                    lines.append(f"  {series:16s} {loop:8s} {gen[series, loop]['tokens_per_s']:7.1f} tokens/s")
        fp32, rt = gen.get(("edgeformer-fp32", "bare")), gen.get(("edgeformer-fp32", "runtime"))
        for name, row in (("bare loop", fp32), ("runtime generate", rt)):
            if row and row.get("bandwidth_fraction"):
                paired = row.get("bandwidth_fraction_paired")
                lines.append(
                    f"  edgeformer fp32 ({name}) / weight-bandwidth limit "
                    f"{row['bandwidth_limit_tokens_per_s']:.1f} tokens/s: {row['bandwidth_fraction']:.1%} "
                    f"(pooled; paired within repetitions: {'-' if paired is None else format(paired, '.1%')})"
                )
        r = ratio(rt, fp32)
        if r:
            lines.append(f"  runtime generate() / bare loop, fp32 tokens/s: {r:.3f}")
        for other in ("qdyn-int8", "toolchain-int8"):
            r = ratio(gen.get(("edgeformer-int8", "bare")), gen.get((other, "bare")))
            if r:
                lines.append(f"  edgeformer int8 / {other} tokens/s (bare loops): {r:.2f}x")
    fwd = {(r["series"], r["sequence"]): r for r in rows if r["kind"] == "forward"}
    pairs = (
        ("edgeformer-fp32", "toolchain-fp32"),
        ("edgeformer-int8", "edgeformer-fp32"),
        ("edgeformer-int8", "qdyn-int8"),
        ("edgeformer-int8", "toolchain-int8"),
    )
    for seq in sorted({k[1] for k in fwd}):
        for a, b in pairs:
            r = ratio(fwd.get((a, seq)), fwd.get((b, seq)))
            if r:
                lines.append(f"  S={seq}: {a} / {b} latency: {r:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="bert-base", help="encoder card (default bert-base)")
    parser.add_argument("--decoder", default="gpt2-small", help="decoder card (default gpt2-small)")
    parser.add_argument("--no-encoder", action="store_true")
    parser.add_argument("--no-decoder", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequence", type=int, nargs="+", default=[16, 128], help="encoder sequence lengths")
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=20, help="timed forward calls per process")
    parser.add_argument("--gen-runs", type=int, default=3, help="timed generations per loop and process")
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant, round-robin")
    parser.add_argument("--label", default=None)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "edgeformer" / "bench-scripts")
    parser.add_argument("--out", type=Path, help="directory for the JSON, CSV and PNG of each model")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cards = ([] if args.no_encoder else [args.encoder]) + ([] if args.no_decoder else [args.decoder])
    for card in cards:
        report = run_card(card, args, args.work)
        print(output.table(report))
        for line in ratios(report):
            print(line)
        print()
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            output.write_outputs(
                report,
                json_path=args.out / f"{card}.json",
                csv_path=args.out / f"{card}.csv",
                plot_path=args.out / f"{card}.png",
            )
            print(f"wrote {args.out}/{card}.json, .csv, .png")


if __name__ == "__main__":
    main()

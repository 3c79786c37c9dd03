"""int8 against fp32 and against onnxruntime's quantize_dynamic: accuracy, latency and size (issue #5).

    python bench/int8.py                          # demo-encoder, demo-decoder, bert-base
    python bench/int8.py bert-base --repeats 5
    python bench/int8.py demo-encoder --optimum-python /path/to/optimum-venv/bin/python --out results/
    python bench/int8.py demo-encoder --smoke      # 1 repeat of 3 calls: checks it runs, times nothing

For each card, three bundles of the same fused fp32 graph:

  fp32        edgeformer's cpu-fp32 target
  qdyn-int8   onnxruntime.quantization.quantize_dynamic(per_channel=True) of that graph (the baseline)
  int8        edgeformer's cpu-int8 target: per-channel symmetric weights (7-bit where the CPU lacks
              VNNI), the tied LM head as one int8 table, an encoder's self-attention as QAttention,
              nodes kept in float until the budget (cosine, perplexity, top-1 >= 99%) holds
  int8-ppl    (trained decoders) cpu-int8 with the budget issue #5 sets decoders: perplexity within
              2% of fp32 (and cosine), no top-1 term
  optimum-int8  (encoders, with --optimum-python) optimum's ORTOptimizer O2 + ORTQuantizer dynamic
              per-channel int8 of edgeformer's unfused fp32 export (bench/optimum_int8.py says why not a
              BertModel directory), run in optimum's own venv

The trained-encoder row (issue #21, bench/trained_encoder.py): on the demo encoder's held-out task,
per benchmarked length, int8's top-1 agreement with fp32 (goal >= 0.95) and budget against fp32,
int8 / optimum-int8 latency (goal <= 0.9), the int8 bundle's own recorded checks per length, and
the balanced accuracy of every variant; in the JSON report under "trained_encoder".

Accuracy on held-out data, through onnxruntime: for the trained demo encoder its task (held-out
stdlib docstrings: as written, shuffled or reversed?), accuracy and balanced accuracy; for the demo
decoder, perplexity per byte on held-out docstrings and teacher-forced top-1 agreement with fp32,
measured twice: whole sequences, 32 rows per call (every held-out byte), and as generation runs the
graph, batch 1, one token per call through the KV cache (``stepwise_logits``, 200 rows of 128 bytes;
dynamic int8 quantizes each call's activations with their own scale, so the two differ).
Latency: forward passes, batch 1, sequences 16 and 128, 2 threads, each variant in processes of its
own, round-robin (``edgeformer bench``); ratios are medians of the ratios within each repetition.
Size: the graph file against fp32's.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from baselines import derived_bundle, quantize_dynamic_per_channel
from optimum_int8 import ARCHES, LATENCY_ONLY, optimum_available, optimum_bundles
from trained_encoder import encoder_accuracy, goal_lines, goals, recorded_parity

from edgeformer.benchmark import orchestrator, output, stats
from edgeformer.benchmark import report as report_mod
from edgeformer.benchmark import variants as bv
from edgeformer.benchmark.options import Limits, Settings


def log(msg: str) -> None:
    print(f"[int8] {msg}", file=sys.stderr, flush=True)


def decoder_accuracy(
    bundles: dict[str, Path], length: int = 128, decode_rows: int = 200
) -> dict[str, dict[str, float]]:
    from edgeformer.data import load_docstrings
    from edgeformer.demo import byte_stream
    from edgeformer.runtime import load

    stream = byte_stream(load_docstrings("valid")).numpy()
    n = (len(stream) - 1) // length
    inputs = stream[: n * length].reshape(n, length)
    labels = stream[1 : n * length + 1].reshape(n, length)
    mask = np.ones_like(inputs)
    picked_rows = np.linspace(0, n - 1, min(decode_rows, n)).astype(int)
    out: dict[str, dict[str, float]] = {}
    reference = stepped_reference = None
    for name, path in bundles.items():  # fp32 first: the reference of top-1 agreement
        model = load(path, threads=2)
        nll, argmaxes = 0.0, []
        for i in range(0, n, 32):
            logits = model.logits(inputs[i : i + 32], mask[i : i + 32]).astype(np.float64)
            logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
            picked = np.take_along_axis(logits, labels[i : i + 32][..., None], -1)[..., 0]
            nll += float((logz - picked).sum())
            argmaxes.append(logits.argmax(-1))
        top = np.concatenate(argmaxes)
        # as generation runs the graph: batch 1, one token per call through the KV cache
        stepped = np.concatenate([model.stepwise_logits(inputs[i : i + 1]).argmax(-1) for i in picked_rows])
        if reference is None:
            reference, stepped_reference = top, stepped
        out[name] = {
            "perplexity": math.exp(nll / labels.size),
            "top1_vs_fp32": float((top == reference).mean()),
            "bytes": int(labels.size),
            "top1_vs_fp32_decoding": float((stepped == stepped_reference).mean()),
            "decoded_bytes": int(stepped.size),
        }
    return out


FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu")
PERPLEXITY_ONLY = "int8-ppl"  # cpu-int8 with the budget of issue #5 for decoders: perplexity only


def variants_of(card_name: str, work: Path, args: argparse.Namespace) -> tuple[dict[str, Path], str | None]:
    """The card's variants as bundles (``--bundle NAME=DIR`` given ones are used as they are) and, for an
    encoder, a note on optimum's variant when it is left out."""
    from edgeformer.zoo import resolve_card, resolve_target

    card = resolve_card(card_name)
    cache, given = work / "cache", dict(args.bundle)

    def bundle(variant: Any) -> Path:
        name = variant if isinstance(variant, str) else variant.name
        return given.get(name) or bv.cached_export(card, variant, cache, seed=0, check=True, log=log)

    fp32, int8 = bundle("cpu-fp32"), bundle("cpu-int8")
    q = quantize_dynamic_per_channel(fp32 / "model.onnx", work / f"{fp32.name}-qdyn.onnx")
    what = "edgeformer's fused fp32 graph + quantize_dynamic(per_channel=True)"
    qdyn = derived_bundle(fp32, work / f"{card.name}-qdyn-int8", q, name="qdyn-int8", precision="int8", how=what)
    variants = {"fp32": fp32, "qdyn-int8": qdyn, "int8": int8}
    note = None
    if card.config.family == "encoder":
        if optimum_available(args.optimum_python):
            # optimum is handed edgeformer's unfused fp32 export (see bench/optimum_int8.py)
            made, found = optimum_bundles(
                card, bundle("unfused"), work, python=args.optimum_python, arch=args.optimum_arch,
                bert_reference=args.bert_reference, log=log,
            )  # fmt: skip
            variants |= made
            fused = ", ".join(f"{op} {found['o2_ops'].get(op, 0)}" for op in FUSED_OPS if found["o2_ops"].get(op))
            note = f"O2 + {args.optimum_arch} dynamic per-channel int8; fused in its O2 graph: {fused}"
            if "bert_o2_ops" in found:
                fused = ", ".join(
                    f"{op} {found['bert_o2_ops'].get(op, 0)}" for op in FUSED_OPS if found["bert_o2_ops"].get(op)
                )
                note += f"; in a BertModel's: {fused}"
        else:
            note = f"not installed (--optimum-python {args.optimum_python})"
    if card.config.family == "decoder" and card.checkpoint:
        # issue #5 asks a decoder for perplexity within 2% of fp32; the cpu-int8 target's budget
        # also asks top-1 agreement >= 99%, which keeps nodes in float. Both, side by side:
        target = dataclasses.replace(
            resolve_target("cpu-int8"), name="cpu-int8-perplexity", budget=(("top1", 0.0), ("perplexity", 1.02))
        )
        variants[PERPLEXITY_ONLY] = bundle(target)
    return variants, note


def latency(bundles: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    variants = [bv.Variant(name, "onnx", bundle=path) for name, path in bundles.items()]
    settings = Settings(
        threads=(args.threads,), sequences=tuple(args.sequence), generate=False, iterations=args.iterations
    )
    concrete = bv.resolve_for_all(variants, settings)
    runs = orchestrator.measure(variants, concrete, repeats=args.repeats, limits=Limits(enabled=False), log=log)
    return report_mod.new_report(runs, baseline="fp32")


def bundle_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"--bundle wants NAME=DIR with DIR a bundle directory, got {text!r}")
    return name, Path(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cards", nargs="*", default=["demo-encoder", "demo-decoder", "bert-base"])
    parser.add_argument("--sequence", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50, help="timed forward calls per process")
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant, round-robin")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "edgeformer" / "bench-scripts")
    parser.add_argument("--out", type=Path, help="directory for each card's JSON report")
    parser.add_argument("--optimum-python", help="python of a venv with optimum[onnxruntime] (encoders' optimum-int8)")
    parser.add_argument("--optimum-arch", choices=ARCHES, default="avx512_vnni", help="optimum's quantization config")
    parser.add_argument(
        "--no-bert-reference", dest="bert_reference", action="store_false",
        help="leave out optimum-bert-int8 (a BertModel of the encoder's size through optimum: latency only)",
    )  # fmt: skip
    parser.add_argument("--examples", type=int, help="held-out examples of the demo encoder's task (default: all)")
    parser.add_argument(
        "--bundle", type=bundle_arg, action="append", default=[], metavar="NAME=DIR",
        help="use this bundle for a variant (cpu-fp32, cpu-int8, unfused) instead of exporting it",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="1 repeat of 3 calls: checks it runs, times nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.iterations = 1, 3
    return args


def print_card(
    card: str, bundles: dict[str, Path], report: dict[str, Any], accuracy: dict[str, Any], args: Any
) -> None:
    sizes = {n: (p / "model.onnx").stat().st_size for n, p in bundles.items()}
    by = {(r["series"], r["sequence"]): r for r in report_mod.rows(report) if r["kind"] == "forward"}
    print(f"\n{card}")
    print(f"  {'variant':17s} {'size MB':>8s} {'vs fp32':>8s}" + "".join(f" {f'S={s} ms':>10s}" for s in args.sequence))
    for name in bundles:
        cells = "".join(f" {by[name, s]['p50_ms']:10.3f}" for s in args.sequence)
        print(f"  {name:17s} {sizes[name] / 1e6:8.2f} {sizes[name] / sizes['fp32']:8.1%}{cells}")
    ours = [n for n in bundles if n.startswith("int8")]
    peers = [n for n in bundles if n in ("qdyn-int8", "optimum-int8", *LATENCY_ONLY)]
    for s in args.sequence:
        vs_peers = [f"{n} / {p} latency {report_mod.ratio(by[n, s], by[p, s]):.3f}" for n in ours for p in peers]
        vs_fp32 = [f"{n} / fp32 {report_mod.ratio(by[n, s], by['fp32', s]):.3f}" for n in [*ours, *peers]]
        print(f"  S={s}: " + "; ".join(vs_peers + vs_fp32))
    for name, metrics in accuracy.items():
        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        print(
            f"  accuracy {name:12s} "
            + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in flat.items())
        )
    if card == "demo-encoder":
        for name in [n for n in [*ours, *peers] if n in accuracy]:
            d = 100 * (accuracy[name]["accuracy"] - accuracy["fp32"]["accuracy"])
            print(f"  {name}: accuracy {d:+.2f} points against fp32")
    if card == "demo-decoder":
        for name in [*ours, *peers]:
            r = accuracy[name]["perplexity"] / accuracy["fp32"]["perplexity"]
            print(
                f"  {name}: perplexity {r - 1:+.2%} against fp32, "
                f"top-1 agreement {accuracy[name]['top1_vs_fp32']:.2%} (whole sequences), "
                f"{accuracy[name]['top1_vs_fp32_decoding']:.2%} (decoding, one token per call)"
            )


def run_card(card: str, args: argparse.Namespace) -> None:
    bundles, optimum_note = variants_of(card, args.work, args)
    accuracy: dict[str, Any] = {}
    if card == "demo-encoder":
        judged = {n: p for n, p in bundles.items() if n not in LATENCY_ONLY}  # random weights: no accuracy
        accuracy = encoder_accuracy(judged, args.sequence, args.examples)
    elif card == "demo-decoder":
        accuracy = decoder_accuracy(bundles)
    report = latency(bundles, args)
    print_card(card, bundles, report, accuracy, args)
    if card == "demo-encoder":  # the trained-encoder row (issue #21)
        by = {(r["series"], r["sequence"]): r for r in report_mod.rows(report) if r["kind"] == "forward"}
        report["trained_encoder"] = goals(by, accuracy, recorded_parity(bundles["int8"]), args.sequence, optimum_note)
        print("\n".join(goal_lines(report["trained_encoder"], accuracy)))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report["accuracy"] = accuracy
        report["sizes"] = {n: (p / "model.onnx").stat().st_size for n, p in bundles.items()}
        output.write_outputs(report, json_path=args.out / f"int8-{card}.json", csv_path=None, plot_path=None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    machine = stats.machine()
    print(f"machine: {machine.get('cpu')}, {args.threads} threads; {stats.versions()}")
    for card in args.cards:
        run_card(card, args)


if __name__ == "__main__":
    main()

"""What any further rewrite of edgeformer's fused fp32 graph could at most save, kind by kind.

    python bench/fusion_headroom.py                      # bert-base and gpt2-small, S = 16, 128, 384
    python bench/fusion_headroom.py bert-mini --seq 16 --reps 5
    python bench/fusion_headroom.py --work /tmp/fl --json headroom.json   # reuse fusion_latency's exports

bench/fusion_latency.py compares edgeformer's fused graph with the other tools and with the card's
matrix products alone (the gemm floor). This script splits the rest, the time spent outside those
products, by kind: it runs edgeformer's fused graph (target cpu-fp32) next to copies of it with one
kind of work deleted,

    cut-norms      every LayerNormalization passes its input through
    cut-gelu       every BiasGelu / FastGelu / Gelu becomes its bias Add (or nothing)
    cut-attention  every attention op keeps its projections and drops the rest (scores, softmax,
                   context): an Attention op becomes its packed q,k,v product (+ bias), of which
                   the first output-width columns go on; a MultiHeadAttention passes its query on

and reports each copy's latency over the whole graph's: 0.97 means no rewrite of that kind can
save more than 3%. The copies compute wrong numbers by construction; only their time means
something. All sessions live in one process (batch 1, 2 intra-op threads, spinning off) and take
turns call by call; each repetition's median ratio is paired with the whole graph's of the same
repetition, and the report gives the median and quartiles of those ratios, which follow the
machine's drift far better than ratios of pooled medians do on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ABLATIONS = ("cut-norms", "cut-gelu", "cut-attention")
GELUS = ("BiasGelu", "FastGelu", "Gelu")


def ablated_graph(fused: str, ablation: str, out: Path) -> int:
    """Write the fused graph at ``fused`` with one kind of work deleted (see the module docstring)
    to ``out``; returns how many nodes were cut."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if ablation not in ABLATIONS:
        raise ValueError(f"ablation {ablation!r} is not one of {', '.join(ABLATIONS)}")
    model = onnx.load(fused)
    graph = model.graph
    kept, cut = [], 0
    for node in graph.node:
        tag = f"cut{cut}"
        if ablation == "cut-norms" and node.op_type == "LayerNormalization":
            kept.append(helper.make_node("Identity", [node.input[0]], [node.output[0]]))
        elif ablation == "cut-gelu" and node.op_type in GELUS:
            has_bias = len(node.input) > 1 and node.input[1]
            kept.append(helper.make_node("Add" if has_bias else "Identity", list(node.input[:2]), [node.output[0]]))
        elif ablation == "cut-attention" and node.op_type == "Attention":
            sizes = [list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"]
            if sizes:
                width = sizes[0][-1]  # the output is as wide as v
            else:  # q, k, v of one width: a third of the packed weight
                width = next(i for i in graph.initializer if i.name == node.input[1]).dims[1] // 3
            graph.initializer.extend(
                numpy_helper.from_array(np.array(v, np.int64), f"{tag}_{k}")
                for k, v in (("start", [0]), ("end", [width]), ("axis", [-1]))
            )
            kept += [
                helper.make_node("MatMul", list(node.input[:2]), [f"{tag}_qkv"]),
                helper.make_node("Add", [f"{tag}_qkv", node.input[2]], [f"{tag}_biased"]),
                helper.make_node(
                    "Slice", [f"{tag}_biased", f"{tag}_start", f"{tag}_end", f"{tag}_axis"], [node.output[0]]
                ),
            ]
        elif ablation == "cut-attention" and node.op_type == "MultiHeadAttention":
            kept.append(helper.make_node("Identity", [node.input[0]], [node.output[0]]))
        else:
            kept.append(node)
            continue
        cut += 1
    if not cut:
        raise SystemExit(f"{fused}: nothing to cut for {ablation}")
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, str(out), save_as_external_data=True, location=out.name + ".data")
    return cut


def measure(
    paths: dict[str, str], feeds: dict, reps: int, iters: int, threads: int, outputs: dict | None = None
) -> dict[str, list[float]]:
    """Per repetition, each variant's median seconds per call; the variants take turns call by call.
    ``outputs``, if given, receives each variant's first output from the warm-up."""
    from fusion_latency import bench_session

    sessions = {}
    for name, path in paths.items():
        session = bench_session(path, threads)  # spinning off: the sessions share the cores
        sessions[name] = (session, {i.name: feeds[i.name] for i in session.get_inputs()})
    for name, (session, own) in sessions.items():  # warm-up
        for _ in range(2):
            first = session.run(None, own)[0]
        if outputs is not None:
            outputs[name] = first
    per_rep: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(reps):
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(iters):
            for name, (session, own) in sessions.items():
                start = time.perf_counter()
                session.run(None, own)
                times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            per_rep[name].append(statistics.median(t))
    return per_rep


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return q1, q2, q3


def paired_ratio(of: list[float], over: list[float]) -> tuple[float, list[float]]:
    """Median and [first, third] quartile of the per-repetition ratios ``of / over``, rounded."""
    q1, q2, q3 = quartiles([a / b for a, b in zip(of, over, strict=True)])
    return round(q2, 3), [round(q1, 3), round(q3, 3)]


def ratio_cells(result: dict, seqs: list[int], key: str) -> str:
    """One printed row: ``median [q1,q3]`` of ``result``'s ratio ``key`` at each sequence length."""
    cells = []
    for s in seqs:
        q1, q3 = result["ratio_quartiles"][s][key]
        cells.append(f"{result['ratio'][s][key]:.3f} [{q1:.3f},{q3:.3f}]".ljust(20))
    return "".join(cells)


def write_results(args: argparse.Namespace, results: list[dict]) -> None:
    """The run's settings and results as JSON at ``args.json``, atomically."""
    from edgeformer.io import write_text_atomic

    settings = vars(args) | {"json": str(args.json), "work": str(args.work)}
    write_text_atomic(args.json, json.dumps({"settings": settings, "results": results}, indent=1, default=str))


def bench_card(card_name: str, seqs: list[int], reps: int, iters: int, threads: int, work: Path, log) -> dict:  # noqa: ANN001
    from fusion_latency import cached_graph, one_graph_card

    from edgeformer.export.graphs import make_inputs
    from edgeformer.export.source import source_from_card

    card = one_graph_card(card_name)
    fused = cached_graph(card, "cpu-fp32", work, log)  # shares bench/fusion_latency.py's cache in --work
    variants = {"edgeformer": fused}
    cut = {}
    for ablation in ABLATIONS:
        out = work / f"{card_name}-edgeformer-{ablation}.onnx"
        cut[ablation] = ablated_graph(fused, ablation, out)
        variants[ablation] = str(out)
    plan = source_from_card(card).plans[0]
    result: dict = {"card": card_name, "nodes_cut": cut, "median_ms": {}, "ratio": {}, "ratio_quartiles": {}}
    for s in seqs:
        log(f"  {card_name} S={s}: {reps} x {iters} calls per variant ...")
        feeds = make_inputs(plan, {"batch": 1, "sequence": s, "past_sequence": 0}, seed=s, pad=False)
        per_rep = measure(variants, feeds, reps, iters, threads)
        whole = per_rep["edgeformer"]
        result["median_ms"][s] = {v: round(statistics.median(t) * 1e3, 3) for v, t in per_rep.items()}
        result["ratio"][s], result["ratio_quartiles"][s] = {}, {}
        for ablation in ABLATIONS:
            result["ratio"][s][ablation], result["ratio_quartiles"][s][ablation] = paired_ratio(
                per_rep[ablation], whole
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cards", nargs="*", default=["bert-base", "gpt2-small"])
    parser.add_argument("--seq", type=int, nargs="+", default=[16, 128, 384])
    parser.add_argument("--reps", type=int, default=12, help="repetitions per shape (one paired ratio each)")
    parser.add_argument("--iters", type=int, default=6, help="calls per variant per repetition")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="cache directory for exports (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the per-repetition figures and the summary here")
    args = parser.parse_args()
    if args.reps < 1 or args.iters < 1 or args.threads < 1:
        parser.error("--reps, --iters and --threads must be at least 1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    print(f"batch 1, {args.threads} threads, {args.reps} repetitions x {args.iters} calls per variant and shape")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for card in args.cards:
            result = bench_card(card, args.seq, args.reps, args.iters, args.threads, work, log)
            results.append(result)
            print(f"\n{card}: time with one kind of work cut / time of the whole fused graph (median [quartiles])")
            print("  " + " " * 15 + "".join(f"S={s:<18}" for s in args.seq))
            row = "".join(f"{result['median_ms'][s]['edgeformer']:<20.2f}" for s in args.seq)
            print(f"  {'whole, ms':<15}{row}")
            for ablation in ABLATIONS:
                cells = ratio_cells(result, args.seq, ablation)
                print(f"  {ablation:<15}{cells} ({result['nodes_cut'][ablation]} nodes)")
    if args.json:
        write_results(args, results)


if __name__ == "__main__":
    main()

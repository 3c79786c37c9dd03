"""Fused fp32 latency against torch eager and the usual fusion tools, measured side by side.

    python bench/fusion_latency.py                          # bert-base and gpt2-small, S = 16, 128, 384
    python bench/fusion_latency.py bert-mini --seq 16 32 --reps 3   # a quick look
    python bench/fusion_latency.py --json fusion.json

For each card, in one run, at batch 1 and 2 intra-op threads:

    torch         the edgeformer torch module, eager, under inference_mode
    unfused       the dynamo export as traced (target unfused-fp32), onnxruntime at ORT_ENABLE_ALL
    ort-optimizer onnxruntime.transformers.optimizer.optimize_model on that same graph
    onnxscript    onnxscript's ort_fusions.optimize_for_ort on that same graph
    edgeformer    edgeformer's fused bundle (target cpu-fp32)

Every variant lives in its own worker process (edgeformer's process harness,
``edgeformer.benchmark.harness``: ``python -P``, JSON requests, a timeout) that sleeps on a pipe
while the others run, and the
variants take turns shape by shape, repetition by repetition (round-robin), so they share the
machine's drift; onnxruntime's intra-op spinning is off in every session unless --spinning on
(onnxruntime's own default; the driver then pauses 50 ms between workers so that an idle one's
threads stop spinning before the next one measures). A variant whose graph
fails to build, or whose outputs differ from torch's (max abs error > 1e-3 of the output scale),
is reported as such and left out of the comparison. The figure of merit is edgeformer's median
latency over the best median of the others, per shape (target: <= 0.95).

One more worker, not a competitor, runs in the same round-robin:

    gemm-floor    the card's matrix products alone: every MatMul of the unfused export with a
                  constant weight (projections, FFNs, LM head) and each attention block's two
                  batched products (scores, context), each on its own input, in onnxruntime's
                  kernels. Every variant runs these same products, so no graph rewrite can take
                  a variant below this floor; "x floor" rows say how far above it each one is.
                  (On edge-sized cards per-call overhead, not products, dominates: the floor
                  means something on base-sized ones.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeformer.benchmark.harness import Worker, WorkerError, serve  # noqa: E402 - after the path above

WORKER_TIMEOUT_S = 1800.0  # one request (load, or one shape's repetitions) of one worker
VARIANTS = ("torch", "unfused", "ort-optimizer", "onnxscript", "edgeformer")
FLOOR = "gemm-floor"
ORT_MODEL_TYPE = {"encoder": "bert", "decoder": "gpt2"}


# ---------------------------------------------------------------- worker side


def bench_session(path: str, threads: int, *, spinning: bool = False):  # noqa: ANN201
    """A CPU session as every timed variant gets it: ``threads`` intra-op threads, one inter-op
    thread, onnxruntime's optimizations at "all", warnings off."""
    import onnxruntime as ort

    from edgeformer.runtime.session import session_options

    opts = session_options(threads=threads, spinning=spinning)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _worker(kind: str, path: str, card: str, threads: int) -> None:
    """Load one variant, then serve {"feeds": npz, "iters": n, "warmup": w} requests from stdin."""
    import numpy as np

    if os.environ.get("EDGEFORMER_BENCH_CPUS"):  # pin to the same cores as every other variant
        os.sched_setaffinity(0, {int(c) for c in os.environ["EDGEFORMER_BENCH_CPUS"].split(",")})

    if kind == "torch":
        import torch

        from edgeformer.export.graphs import run_torch
        from edgeformer.export.source import source_from_card
        from edgeformer.zoo import resolve_card

        torch.set_num_threads(threads)
        plan = source_from_card(resolve_card(card)).plans[0]

        def call(feeds):  # noqa: ANN001, ANN202
            with torch.inference_mode():
                return list(run_torch(plan, feeds).values())
    else:
        spinning = os.environ.get("EDGEFORMER_BENCH_SPINNING") == "1"  # --spinning; off unless asked
        session = bench_session(path, threads, spinning=spinning)
        names = [i.name for i in session.get_inputs()]
        by_length: dict[int, dict] = {}

        def call(feeds):  # noqa: ANN001, ANN202
            if kind != FLOOR:
                return session.run(None, {n: feeds[n] for n in names})
            length = feeds["input_ids"].shape[1]  # the products take their own inputs, at the request's length
            if length not in by_length:
                rng = np.random.default_rng(length)
                by_length[length] = {
                    i.name: rng.standard_normal([length if d == "S" else d for d in i.shape]).astype(np.float32)
                    for i in session.get_inputs()
                }
            return session.run(None, by_length[length])

    def measure(request: dict) -> list[float]:
        feeds = dict(np.load(request["feeds"]))
        outputs = call(feeds)
        if request.get("save"):
            np.savez(request["save"], *[np.asarray(o) for o in outputs])
        for _ in range(request["warmup"]):
            call(feeds)
        times = []
        for _ in range(request["iters"]):
            start = time.perf_counter()
            call(feeds)
            times.append(time.perf_counter() - start)
        return times

    serve(measure)  # edgeformer's one process harness: "ready", then one JSON answer per request


# ---------------------------------------------------------------- driver side


def start_worker(kind: str, path: str, card: str, threads: int) -> Worker:
    """This script as a worker process of edgeformer's harness (``python -P``, JSON requests)."""
    argv = [__file__, "--worker", kind, path, card, "--threads", str(threads)]
    return Worker(argv, what=f"{kind} worker", timeout=WORKER_TIMEOUT_S)


def request(feeds: Path, iters: int, warmup: int, save: Path | None = None) -> dict:
    return {"feeds": str(feeds), "iters": iters, "warmup": warmup, "save": str(save) if save else ""}


def one_graph_card(card_name: str):  # noqa: ANN201
    """The card, if it is one this benchmark measures: an encoder or a decoder (one graph)."""
    from edgeformer.zoo import resolve_card

    card = resolve_card(card_name)
    if card.config.family not in ORT_MODEL_TYPE:
        raise SystemExit(
            f"{card_name} is an {card.config.family} card; this benchmark measures encoder and decoder cards"
        )
    return card


def cached_graph(card, target: str, work: Path, log) -> str:  # noqa: ANN001
    """The graph of ``card`` exported for ``target`` (no parity check), from the cache in ``work``."""
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    out = work / f"{card.name}-{target}"
    if not (out / "manifest.json").is_file():
        log(f"exporting {card.name} ({target}) ...")
        export_bundle(source_from_card(card), resolve_target(target), out, check=False, force=True)
    return str(out / "model.onnx")


def prepare(card_name: str, work: Path, log) -> tuple[dict[str, str], dict[str, str], object]:  # noqa: ANN001
    """Export the unfused and fused bundles and run the two other tools on the unfused graph."""
    import onnx_ir as ir

    card = one_graph_card(card_name)
    cfg = card.config
    paths: dict[str, str] = {"torch": ""}
    failed: dict[str, str] = {}
    for variant, target in (("unfused", "unfused-fp32"), ("edgeformer", "cpu-fp32")):
        paths[variant] = cached_graph(card, target, work, log)

    theirs = work / f"{card_name}-onnxscript.onnx"
    if not theirs.is_file():
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        log("onnxscript optimize_for_ort ...")
        model = ir.load(paths["unfused"])
        optimize_for_ort(model)
        ir.save(model, theirs)
    paths["onnxscript"] = str(theirs)

    ort_out = work / f"{card_name}-ort-optimizer.onnx"
    if not ort_out.is_file():
        from onnxruntime.transformers import optimizer

        log("onnxruntime transformer optimizer ...")
        try:
            optimized = optimizer.optimize_model(
                paths["unfused"], model_type=ORT_MODEL_TYPE[cfg.family], num_heads=cfg.n_heads, hidden_size=cfg.d_model
            )
            optimized.save_model_to_file(str(ort_out))
        except Exception as exc:  # noqa: BLE001 - the tool's own failure is a result
            failed["ort-optimizer"] = f"optimize_model raised {type(exc).__name__}: {str(exc)[:200]}"
    if ort_out.is_file():
        paths["ort-optimizer"] = str(ort_out)
    floor = work / f"{card_name}-{FLOOR}.onnx"
    if not floor.is_file():
        log("gemm floor graph ...")
        floor_graph(paths["unfused"], cfg, floor)
    paths[FLOOR] = str(floor)
    return paths, failed, card


def floor_graph(unfused: str, cfg, out: Path) -> None:  # noqa: ANN001
    """Write the gemm-floor graph of a card (see the module docstring) to ``out``."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    folded = out.with_suffix(".folded.onnx")  # constant Transposes of weights folded, as at session load
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(folded)
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", folded.name + ".data")
    opts.log_severity_level = 3
    ort.InferenceSession(unfused, opts, providers=["CPUExecutionProvider"])
    model = onnx.load(str(folded))
    weights = {i.name: i for i in model.graph.initializer if len(i.dims) == 2}
    nodes, inputs, inits = [], [], []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            w = numpy_helper.to_array(weights[node.input[1]])
            if any(a.name == "transB" and a.i for a in node.attribute):
                w = w.T
            name = f"w{len(nodes)}"
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w), name))
            rows = [1, "S"] if node.op_type == "MatMul" else [1]  # a Gemm is 2-D: the pooler's one row
            inputs.append(helper.make_tensor_value_info(f"x{len(nodes)}", TensorProto.FLOAT, [*rows, w.shape[0]]))
            nodes.append(helper.make_node("MatMul", [f"x{len(nodes)}", name], [f"y{len(nodes)}"]))
    heads, head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
    for layer in range(cfg.n_layers):  # scores = q k^T, context = p v
        for a, b in (([heads, "S", head_dim], [heads, head_dim, "S"]), ([heads, "S", "S"], [heads, "S", head_dim])):
            i = len(nodes)
            inputs += [
                helper.make_tensor_value_info(f"a{i}", TensorProto.FLOAT, [1, *a]),
                helper.make_tensor_value_info(f"b{i}", TensorProto.FLOAT, [1, *b]),
            ]
            nodes.append(helper.make_node("MatMul", [f"a{i}", f"b{i}"], [f"y{i}"], name=f"attention{layer}_{i}"))
    outputs = [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes]
    graph = helper.make_graph(nodes, "gemm_floor", inputs, outputs, inits)
    floor = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(floor, str(out), save_as_external_data=True, location=out.name + ".data")
    folded.unlink()
    (folded.parent / (folded.name + ".data")).unlink(missing_ok=True)


def ops_of(path: str) -> dict[str, int]:
    from collections import Counter

    import onnx

    model = onnx.load(path, load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


def bench_card(card_name: str, seqs: list[int], reps: int, iters: int, threads: int, work: Path, log) -> dict:  # noqa: ANN001
    import numpy as np

    from edgeformer.export.graphs import make_inputs
    from edgeformer.export.source import source_from_card

    paths, failed, card = prepare(card_name, work, log)
    plan = source_from_card(card).plans[0]
    feeds_files = {}
    for s in seqs:
        feeds = make_inputs(plan, {"batch": 1, "sequence": s, "past_sequence": 0}, seed=s, pad=False)
        feeds_files[s] = work / f"{card_name}-feeds-{s}.npz"
        np.savez(feeds_files[s], **feeds)

    workers: dict[str, Worker] = {}
    for variant in (*VARIANTS, FLOOR):
        if variant in failed:
            continue
        try:
            workers[variant] = start_worker(variant, paths[variant], card_name, threads)
        except WorkerError as exc:
            failed[variant] = str(exc)

    # correctness first: each variant's outputs against torch's, at the shortest shape
    check_s = seqs[0]
    outs = {}
    for variant, worker in workers.items():
        if variant == FLOOR:
            continue
        save = work / f"{card_name}-{variant}-out.npz"
        worker.call(request(feeds_files[check_s], 0, 0, save=save), WORKER_TIMEOUT_S)
        outs[variant] = [v for _, v in sorted(np.load(save).items(), key=lambda kv: int(kv[0].split("_")[1]))]
    errors = {}
    reference = outs.get("torch")
    for variant, got in list(outs.items()):
        if variant == "torch":
            continue
        first, ref = np.asarray(got[0], dtype=np.float64), np.asarray(reference[0], dtype=np.float64)
        errors[variant] = float(np.abs(first - ref).max() / max(1.0, np.abs(ref).max()))
        if errors[variant] > 1e-3:
            failed[variant] = f"outputs differ from torch by {errors[variant]:.3g} of their scale"
            workers.pop(variant).close()

    samples: dict[str, dict[int, list[float]]] = {v: {s: [] for s in seqs} for v in workers}
    for s in seqs:
        for worker in workers.values():  # warm every variant at this shape once
            worker.call(request(feeds_files[s], 0, 3), WORKER_TIMEOUT_S)
        for rep in range(reps):
            for variant, worker in workers.items():
                samples[variant][s] += worker.call(request(feeds_files[s], iters, 0), WORKER_TIMEOUT_S)
                if os.environ.get("EDGEFORMER_BENCH_SPINNING") == "1":
                    time.sleep(0.05)  # the idle worker's spinning threads park before the next one measures
            log(f"  {card_name} S={s} rep {rep + 1}/{reps}")
    for worker in workers.values():
        worker.close()

    medians = {v: {s: statistics.median(t) for s, t in by_s.items()} for v, by_s in samples.items()}
    ratios, best, over_floor = {}, {}, {}
    for s in seqs:
        others = {v: medians[v][s] for v in medians if v not in ("edgeformer", FLOOR)}
        if "edgeformer" in medians and others:
            best[s] = min(others, key=others.__getitem__)
            ratios[s] = medians["edgeformer"][s] / others[best[s]]
        if FLOOR in medians:  # how far above the products alone each variant runs
            over_floor[s] = {v: round(by_s[s] / medians[FLOOR][s], 3) for v, by_s in medians.items() if v != FLOOR}
    return {
        "card": card_name,
        "failed": failed,
        "max_rel_error_vs_torch": errors,
        "median_ms": {v: {s: round(m * 1e3, 3) for s, m in by_s.items()} for v, by_s in medians.items()},
        "edgeformer_over_best_other": {s: round(r, 3) for s, r in ratios.items()},
        "best_other": best,
        "over_gemm_floor": over_floor,
        "ops": {v: ops_of(p) for v, p in paths.items() if p},
        "samples_s": samples,
    }


def machine() -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cards", nargs="*", default=["bert-base", "gpt2-small"])
    parser.add_argument("--seq", type=int, nargs="+", default=[16, 128, 384])
    parser.add_argument("--reps", type=int, default=5, help="round-robin repetitions per shape")
    parser.add_argument("--iters", type=int, default=4, help="timed calls per variant per repetition")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--spinning",
        choices=("off", "on"),
        default="off",
        help="onnxruntime's intra-op spinning in every session (default off; on is onnxruntime's own default)",
    )
    parser.add_argument("--cpus", help="pin every worker to these cores, e.g. 0,1 (on a machine with more cores)")
    parser.add_argument("--work", type=Path, help="cache directory for exports (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write every sample and the summary here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker, threads=args.threads)
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.cpus:
        os.environ["EDGEFORMER_BENCH_CPUS"] = args.cpus
    os.environ["EDGEFORMER_BENCH_SPINNING"] = "1" if args.spinning == "on" else "0"
    info = machine()
    info["pinned_cpus"] = args.cpus
    print(f"machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, onnxruntime {info['onnxruntime']}")
    print(
        f"batch 1, {args.threads} threads, intra-op spinning {args.spinning}, "
        f"{args.reps} x {args.iters} timed calls per variant and shape\n"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for card in args.cards:
            result = bench_card(card, args.seq, args.reps, args.iters, args.threads, work, log)
            results.append(result)
            print(f"{card}: median latency, ms")
            header = "  variant        " + "".join(f"S={s:<9}" for s in args.seq)
            print(header)
            for variant in (*VARIANTS, FLOOR):
                if variant in result["median_ms"]:
                    row = "".join(f"{result['median_ms'][variant][s]:<11.2f}" for s in args.seq)
                    print(f"  {variant:<15}{row}")
                elif variant in result["failed"]:
                    print(f"  {variant:<15}not measured: {result['failed'][variant]}")
            ratio = "".join(f"{result['edgeformer_over_best_other'].get(s, float('nan')):<11.3f}" for s in args.seq)
            print(f"  {'ratio':<15}{ratio}  (edgeformer / best other; target <= 0.95)")
            floor = result["over_gemm_floor"]
            if floor:
                for label, pick in (("edgeformer", lambda s: "edgeformer"), ("best other", result["best_other"].get)):
                    row = "".join(f"{floor[s].get(pick(s) or '', float('nan')):<11.3f}" for s in args.seq)
                    print(f"  {'x floor':<15}{row}  ({label} / gemm floor)")
                need = "".join(
                    f"{0.95 * floor[s][result['best_other'][s]]:<11.3f}" if s in result["best_other"] else f"{'-':<11}"
                    for s in args.seq
                )
                print(f"  {'target x floor':<15}{need}  (where edgeformer must be for 0.95; 1.000 = products alone)")
            print()
    if args.json:
        from edgeformer.io import write_text_atomic

        write_text_atomic(
            args.json,
            json.dumps(
                {
                    "machine": info,
                    "settings": vars(args) | {"json": str(args.json), "work": str(args.work)},
                    "results": results,
                },
                indent=1,
                default=str,
            ),
        )


if __name__ == "__main__":
    main()

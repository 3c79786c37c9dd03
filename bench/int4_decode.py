"""int4 against int8 decoding at batch 1: tokens/s, the fraction of the bandwidth limit, top-1 agreement (#21, #24).

    python bench/int4_decode.py --json int4_decode.json     # GPT-2-small-sized, random weights (quiet machine)
    python bench/int4_decode.py --size tiny                 # smoke run: a tiny GPT-2, seconds

Builds a GPT-2-sized Hugging Face directory (random weights, seed 0; sizes as bench/export_time.py),
exports it with ``edgeformer export --target cpu-fp32|cpu-int8|cpu-int4`` and, per bundle:

  tokens/s             greedy decoding through the KV cache, batch 1, ``--threads`` threads, the
                       prompt's step left out; the median over ``--repeats`` runs
  weight bytes/token   the bytes of every initializer a decoding step reads in full (a table only
                       Gathers read, such as the position embedding, gives one row and is left out)
  bandwidth fraction   weight bytes/token x tokens/s over the memory bandwidth a numpy copy of
                       256 MiB measures (read + write): 1.0 is the memory-bound limit
  top-1 agreement      teacher-forced: the argmax of every position of ``--rows`` random rows
                       against the fp32 bundle's (1.0 for fp32 itself)

Ratios: int4 / int8 tokens/s (the issue wants > 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from export_time import SIZES, build_model_dir

from edgeformer.benchmark.loops import _empty_past, bare_decoder

TARGETS = {"fp32": "cpu-fp32", "int8": "cpu-int8", "int4": "cpu-int4"}
ROW_READS = {"Gather", "GatherBlockQuantized"}  # ops that read one row of a table per token


def log(msg: str) -> None:
    print(f"[int4_decode] {msg}", file=sys.stderr, flush=True)


def weight_bytes_per_token(graph: onnx.GraphProto) -> int:
    """The bytes of the initializers a decoding step reads in full: every one some node reads other than
    as the table of a row lookup (input 0 of a Gather). A table shared by a Gather and a MatMul counts."""
    full: set[str] = set()
    for node in graph.node:
        for index, name in enumerate(node.input):
            if not (node.op_type in ROW_READS and index == 0):
                full.add(name)
    return sum(_nbytes(i) for i in graph.initializer if i.name in full)


def _nbytes(tensor: onnx.TensorProto) -> int:
    if tensor.raw_data:
        return len(tensor.raw_data)
    return onnx.numpy_helper.to_array(tensor).nbytes


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second a numpy copy moves (read + write), the best of ``repeats``."""
    source = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def session(bundle: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])


def tokens_per_second(sess: Any, vocab: int, prompt: int, new_tokens: int, repeats: int) -> float:
    """Decoding steps per second at batch 1, the prompt's step left out; the median of ``repeats``."""
    ids = np.random.default_rng(0).integers(0, vocab, (1, prompt))
    rates = []
    for _ in range(repeats):
        _tokens, times = bare_decoder(sess, ids, new_tokens)
        rates.append((len(times) - 1) / (times[-1] - times[0]))
    return statistics.median(rates)


def teacher_forced_top1(sess: Any, reference: Any, vocab: int, rows: int, length: int) -> float:
    """The share of positions whose argmax agrees with ``reference``'s, whole rows fed at once."""
    ids = np.random.default_rng(1).integers(0, vocab, (rows, length))
    agree = []
    for s in (sess, reference):
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "position_ids": np.tile(np.arange(length), (rows, 1)),
        } | _empty_past(s, rows)
        wanted = {i.name for i in s.get_inputs()}
        agree.append(s.run(["logits"], {k: v for k, v in feeds.items() if k in wanted})[0].argmax(-1))
    return float((agree[0] == agree[1]).mean())


def export(model_dir: Path, precision: str, work: Path) -> Path:
    out = work / f"gpt2-{precision}"
    cmd = [sys.executable, "-m", "edgeformer.cli", "export", str(model_dir), "-o", str(out), "--force"]
    log(f"export {precision} ...")
    done = subprocess.run([*cmd, "--target", TARGETS[precision]], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edgeformer export {precision} failed: {done.stderr.strip().splitlines()[-3:]}")
    return out


def measure(bundles: dict[str, Path], args: argparse.Namespace, vocab: int, bandwidth: float) -> list[dict[str, Any]]:
    """One row per bundle: size, weight bytes per token, tokens/s, bandwidth fraction, top-1 agreement."""
    reference = session(bundles["fp32"], args.threads)
    rows = []
    for precision, bundle in bundles.items():
        sess = session(bundle, args.threads)
        read = weight_bytes_per_token(onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph)
        rate = tokens_per_second(sess, vocab, args.prompt, args.new_tokens, args.repeats)
        rows.append({
            "precision": precision,
            "file_mb": round(sum(f.stat().st_size for f in bundle.glob("*.onnx*")) / 1e6, 2),
            "weight_mb_per_token": round(read / 1e6, 3),
            "tokens_per_s": round(rate, 1),
            "bandwidth_fraction": round(read * rate / bandwidth, 3),
            "top1_vs_fp32": round(teacher_forced_top1(sess, reference, vocab, args.rows, args.length), 4),
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], bandwidth: float) -> str:
    keys = list(rows[0])
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(str(r[k]) for k in keys) for r in rows]
    rate = {r["precision"]: r["tokens_per_s"] for r in rows}
    lines.append(f"memory bandwidth (numpy copy): {bandwidth / 1e9:.1f} GB/s")
    if rate.get("int8"):
        lines.append(f"int4 / int8 tokens/s: {rate['int4'] / rate['int8']:.2f} (the issue wants > 1)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full: GPT-2 small; tiny: smoke")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=8, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 128 (full), 16 (tiny)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=4, help="teacher-forced rows")
    parser.add_argument("--length", type=int, default=None, help="teacher-forced length; default 128 (full), 16")
    parser.add_argument("--workdir", type=Path, help="where the model and bundles go (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    parser.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="PRECISION=DIR",
        help="measure this bundle instead of exporting one (e.g. the ones bench/export_time.py --workdir timed)",
    )
    args = parser.parse_args(argv)
    given = dict(b.split("=", 1) for b in args.bundle)
    if set(given) - set(TARGETS):
        parser.error(f"--bundle takes PRECISION=DIR with PRECISION one of {', '.join(TARGETS)}")
    tiny = args.size == "tiny"
    args.new_tokens = args.new_tokens or (16 if tiny else 128)
    args.length = args.length or (16 if tiny else 128)
    vocab = SIZES[args.size]["gpt2"]["vocab_size"]
    with tempfile.TemporaryDirectory(prefix="int4-decode-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = build_model_dir("gpt2", args.size, work)
        bundles = {p: Path(given[p]) if p in given else export(model_dir, p, work) for p in TARGETS}
        bandwidth = memory_bandwidth()
        rows = measure(bundles, args, vocab, bandwidth)
    result = {"size": args.size, "threads": args.threads, "bandwidth_bytes_per_s": bandwidth, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(table(rows, bandwidth))
    return 0


if __name__ == "__main__":
    sys.exit(main())

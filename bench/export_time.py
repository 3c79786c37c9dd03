"""Export time and peak memory: edgeformer against optimum on the same Hugging Face directories (issue #21).

    python bench/export_time.py --optimum-python /work/wt/optimum-venv/bin/python --json export_time.json
    python bench/export_time.py --size tiny            # smoke run: tiny models, seconds

Builds a GPT-2-small-sized and a BERT-base-sized Hugging Face directory (random weights,
``save_pretrained``, no hub), then runs back to back, each in a process of its own:

  edgeformer fp32 / int8 / int4   ``edgeformer export DIR --target cpu-fp32|cpu-int8|cpu-int4`` (parity checks included)
  optimum fp32                    ``optimum.exporters.onnx.main_export`` (its own output check included)
  optimum int8                    the same export, then ``ORTQuantizer`` dynamic per-channel int8

optimum runs in its own venv (``--optimum-python``: never installed into edgeformer's, whose torch and
onnxruntime it may replace); without one, its rows say "not installed". Wall time is the child's;
peak memory is the child's maximum resident set (``os.wait4``'s ru_maxrss). Ratios: edgeformer fp32 /
optimum fp32 (the issue asks <= 1.5), int8 and int4 / edgeformer fp32 (<= 2 each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024},
        "bert": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
                 "vocab_size": 30522, "max_position_embeddings": 512},
    },
    "tiny": {
        "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 32},
        "bert": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
                 "vocab_size": 1000, "max_position_embeddings": 32},
    },
}  # fmt: skip
OPTIMUM_TASK = {"gpt2": "text-generation-with-past", "bert": "feature-extraction"}
EDGEFORMER_TARGETS = {"fp32": "cpu-fp32", "int8": "cpu-int8", "int4": "cpu-int4"}

OPTIMUM_SCRIPT = """
import sys
from optimum.exporters.onnx import main_export
model_dir, out, task, quantize = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "int8"
main_export(model_dir, output=out, task=task)
if quantize:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    quantizer = ORTQuantizer.from_pretrained(out, file_name="model.onnx")
    quantizer.quantize(save_dir=out + "-int8", quantization_config=config)
"""


def log(msg: str) -> None:
    print(f"[export_time] {msg}", file=sys.stderr, flush=True)


def build_model_dir(kind: str, size: str, root: Path) -> Path:
    """A Hugging Face directory of random weights (seeded), written with save_pretrained."""
    import torch
    import transformers

    torch.manual_seed(0)
    out = root / f"{kind}-{size}"
    if kind == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**SIZES[size][kind]))
    else:
        model = transformers.BertModel(transformers.BertConfig(**SIZES[size][kind]))
    model.eval().save_pretrained(out)
    return out


def timed(command: list[str], log_file: Path) -> dict[str, Any]:
    """Run ``command`` in a process of its own: wall seconds, peak RSS (MiB) and exit status."""
    start = time.perf_counter()
    with log_file.open("wb") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    row: dict[str, Any] = {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss * scale / 2**20, 1)}
    if child.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        row["error"] = f"exit {child.returncode}: " + " | ".join(tail)
    return row


def optimum_available(python: str | None) -> bool:
    if not python or not Path(python).exists():
        return False
    probe = [python, "-c", "import optimum.exporters.onnx, optimum.onnxruntime"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def run_tools(model_dir: Path, kind: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every tool on one directory, back to back; a row per tool."""
    rows = []
    for precision in args.precisions if "edgeformer" in args.tools else []:
        out = work / f"{kind}-edgeformer-{precision}"
        cmd = [sys.executable, "-m", "edgeformer.cli", "export", str(model_dir), "-o", str(out), "--force"]
        cmd += ["--target", EDGEFORMER_TARGETS[precision]]
        log(f"{kind}: edgeformer {precision} ...")
        rows.append({"model": kind, "tool": "edgeformer", "precision": precision} | timed(cmd, out.with_suffix(".log")))
    have_optimum = "optimum" in args.tools and optimum_available(args.optimum_python)
    for precision in ("fp32", "int8"):
        row: dict[str, Any] = {"model": kind, "tool": "optimum", "precision": precision}
        if not have_optimum:
            rows.append(row | {"seconds": None, "peak_rss_mib": None, "note": "not installed"})
            continue
        out = work / f"{kind}-optimum-{precision}"
        cmd = [args.optimum_python, "-c", OPTIMUM_SCRIPT, str(model_dir), str(out), OPTIMUM_TASK[kind], precision]
        log(f"{kind}: optimum {precision} ...")
        rows.append(row | timed(cmd, out.with_suffix(".log")))
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: edgeformer fp32 / optimum fp32 (goal <= 1.5), int8 and int4 / edgeformer fp32 (<= 2)."""
    out = []
    for kind in dict.fromkeys(r["model"] for r in rows):
        secs = {
            (r["tool"], r["precision"]): r.get("seconds") if "error" not in r else None
            for r in rows
            if r["model"] == kind
        }
        pairs = [
            ("edgeformer fp32 / optimum fp32", ("edgeformer", "fp32"), ("optimum", "fp32"), 1.5),
            ("edgeformer int8 / edgeformer fp32", ("edgeformer", "int8"), ("edgeformer", "fp32"), 2.0),
            ("edgeformer int4 / edgeformer fp32", ("edgeformer", "int4"), ("edgeformer", "fp32"), 2.0),
            ("optimum int8 / optimum fp32", ("optimum", "int8"), ("optimum", "fp32"), None),
        ]
        for name, top, bottom, goal in pairs:
            a, b = secs.get(top), secs.get(bottom)
            value = round(a / b, 2) if a and b else None
            out.append({"model": kind, "ratio": name, "value": value, "goal": goal})
    return out


def table(rows: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> str:
    lines = [f"{'model':<6} {'tool':<11} {'precision':<9} {'seconds':>9} {'peak MiB':>9}  note"]
    for r in rows:
        secs = "-" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        mem = "-" if r.get("peak_rss_mib") is None else f"{r['peak_rss_mib']:.0f}"
        note = r.get("note") or r.get("error", "")
        lines.append(f"{r['model']:<6} {r['tool']:<11} {r['precision']:<9} {secs:>9} {mem:>9}  {note}")
    lines.append("")
    for q in ratio_rows:
        value = "-" if q["value"] is None else f"{q['value']:.2f}"
        goal = "" if q["goal"] is None else f" (goal <= {q['goal']})"
        lines.append(f"{q['model']:<6} {q['ratio']:<36} {value:>6}{goal}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="full", help="full: GPT-2-small / BERT-base; tiny: smoke"
    )
    parser.add_argument("--models", nargs="+", choices=sorted(OPTIMUM_TASK), default=["gpt2", "bert"])
    parser.add_argument("--precisions", nargs="+", choices=list(EDGEFORMER_TARGETS), default=list(EDGEFORMER_TARGETS))
    parser.add_argument("--tools", nargs="+", choices=["edgeformer", "optimum"], default=["edgeformer", "optimum"])
    parser.add_argument("--optimum-python", help="python of a venv with optimum[onnxruntime] (or optimum-onnx)")
    parser.add_argument("--workdir", type=Path, help="where models and exports go (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write the rows and ratios as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="export-time-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for kind in args.models:
            rows += run_tools(build_model_dir(kind, args.size, work), kind, args, work)
        result = {"size": args.size, "rows": rows, "ratios": ratios(rows)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(table(result["rows"], result["ratios"]))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and onnxruntime-gpu, export the demo models, check
# their parity on the CUDA provider (strictly: every graph on CUDA, against the torch source) and
# print latency on CUDA against the CPU, in one process with spinning off.
#
#   bash bench/gpu_check.sh [WORKDIR]             # bundles go to WORKDIR (default: a temporary one)
#   CARDS="demo-decoder gpt2-small" bash bench/gpu_check.sh   # other cards (default: the three below)
#
# It fails at once, saying why, when onnxruntime has no CUDA provider or the provider cannot start
# on this machine. Needs torch (export and check) and onnxruntime-gpu instead of onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # runs from a checkout, installed or not
PY=${PYTHON:-python3}
CARDS=${CARDS:-"demo-decoder demo-encoder transformer-mini"}
WORK=${1:-$(mktemp -d -t edgeformer-gpu-XXXXXX)}
mkdir -p "$WORK"

echo "== 1. the CUDA provider"
"$PY" - <<'EOF'
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

have = ort.get_available_providers()
if "CUDAExecutionProvider" not in have:
    sys.exit(
        f"gpu_check: FAILED: onnxruntime {ort.__version__} has no CUDA execution provider (installed: "
        f"{', '.join(have)}). Install onnxruntime-gpu instead of onnxruntime, on a machine with an NVIDIA GPU."
    )
try:
    ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* pip packages, when that is where they are
except Exception:  # noqa: BLE001 - older onnxruntime, or the libraries are on LD_LIBRARY_PATH
    pass
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "probe",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
try:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    session.run(None, {"x": np.array([-1.0, 1.0], dtype=np.float32)})
except Exception as exc:  # noqa: BLE001
    sys.exit(f"gpu_check: FAILED: the CUDA provider is installed but does not start: {str(exc).splitlines()[0]}")
if session.get_providers()[0] != "CUDAExecutionProvider":
    sys.exit("gpu_check: FAILED: the CUDA provider is installed but did not start (check the CUDA/cuDNN libraries)")
print(f"onnxruntime {ort.__version__}, providers: {', '.join(have)}: CUDA starts")
EOF

echo "== 2. export (parity on the CPU provider as part of it) to $WORK"
for card in $CARDS; do
  "$PY" -m edgeformer.cli export "$card" -o "$WORK/$card" --force
done

echo "== 3. parity on CUDA (strict)"
for card in $CARDS; do
  echo "-- $card"
  "$PY" -m edgeformer.cli check "$WORK/$card" --providers cuda
done

echo "== 4. latency: CUDA against CPU (median of 20 runs after 3 warm-ups)"
"$PY" - "$WORK" $CARDS <<'EOF'
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import onnxruntime as ort

from edgeformer import runtime

ort.set_default_logger_severity(3)  # errors only: the node-placement warnings of every session are noise here
work, cards = Path(sys.argv[1]), sys.argv[2:]


def median_ms(call, runs=20, warm=3):
    for _ in range(warm):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


rows = []
for card in cards:
    variants = {
        "cpu": runtime.load(work / card, providers=("cpu",), strict=True, spinning=False),
        "cuda": runtime.load(work / card, providers=("cuda",), strict=True),
        "cuda+iobinding": runtime.load(work / card, providers=("cuda",), strict=True, io_binding=True),
    }
    model = variants["cpu"]
    rng = np.random.default_rng(0)
    if model.family == "encoder":
        batch = rng.integers(3, min(model.vocab_size, 256), (8, 64)).tolist()
        task, calls = "encode 8 x 64 tokens", {k: (lambda m=m: m.encode(batch)) for k, m in variants.items()}
        key = "embeddings" if "embeddings" in model.encode(batch) else "last_hidden_state"
        outs = {k: m.encode(batch)[key] for k, m in variants.items()}
        agree = max(float(np.abs(outs[k] - outs["cpu"]).max()) for k in outs)
        agree_text = f"max |cuda - cpu| {agree:.1e}"
    else:
        prompt = [257, *b"Return the"] if model.tokenizer == "bytes" and model.family == "decoder" else [5, 6, 7, 8, 9]
        task = "generate 32 tokens, batch 1"
        calls = {k: (lambda m=m: m.generate(prompt, 32, stop_tokens=())) for k, m in variants.items()}
        tokens = {k: m.generate(prompt, 32, stop_tokens=()) for k, m in variants.items()}
        agree_text = "tokens identical" if all(t == tokens["cpu"] for t in tokens.values()) else "TOKENS DIFFER"
    times = {k: median_ms(call) for k, call in calls.items()}
    rows.append((card, task, times, agree_text))

print(f"{'card':18} {'task':28} {'cpu ms':>9} {'cuda ms':>9} {'cuda+iobind':>12} {'cpu/cuda':>9}  check")
for card, task, t, agree in rows:
    best = min(t["cuda"], t["cuda+iobinding"])
    print(
        f"{card:18} {task:28} {t['cpu']:9.2f} {t['cuda']:9.2f} {t['cuda+iobinding']:12.2f} "
        f"{t['cpu'] / best:8.2f}x  {agree}"
    )
if any("DIFFER" in r[3] for r in rows):
    sys.exit("gpu_check: FAILED: CUDA generated other tokens than the CPU")
print("gpu_check: ok")
EOF

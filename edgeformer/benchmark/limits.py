"""What the machine allows, measured through onnxruntime at a given thread count. No torch, no onnx.

Three one-node graphs, written here as ONNX protobuf bytes by a few lines of wire-format encoding
(so a device needs only onnxruntime and numpy), with symbolic dimensions so one graph serves any size:

matmul_fp32   MatMul of two (N, N) float32 matrices            -> GFLOP/s (2 N^3 per run): prefill, encoders
matmul_int8   MatMulInteger of (N, N) uint8 by (N, N) int8     -> GOP/s: int8 prefill, encoders
bandwidth     MatMul of a (1, K) vector by a (K, M) fp32 matrix -> GB/s of weights read: token-by-token decoding

Each figure is the best of several runs (a limit is what the machine can do, not what it usually does);
every sample is kept. The matrices are bound once as OrtValues, so a run reads them in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from edgeformer.runtime.errors import OptionError
from edgeformer.runtime.session import session_options

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6
IR_VERSION, OPSET = 7, 13  # old enough for any onnxruntime a device may have (1.8+)

Dim = int | str
Value = tuple[str, int, tuple[Dim, ...]]  # name, element type, shape


# ----- ONNX protobuf, by hand: varints and length-delimited fields --------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes | str) -> bytes:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def _value_info(value: Value) -> bytes:
    name, elem_type, shape = value
    dims = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in shape)  # Dimension
    tensor = _int(1, elem_type) + _bytes(2, dims)  # TypeProto.Tensor: elem_type, shape
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor))  # ValueInfoProto: name, type (TypeProto.tensor_type)


def one_node_model(op_type: str, inputs: Sequence[Value], output: Value) -> bytes:
    """A serialized ModelProto holding one node of the default domain: ``output = op_type(*inputs)``."""
    node = b"".join(_bytes(1, v[0]) for v in inputs) + _bytes(2, output[0]) + _bytes(3, op_type) + _bytes(4, op_type)
    graph = _bytes(1, node) + _bytes(2, op_type.lower())
    graph += b"".join(_bytes(11, _value_info(v)) for v in inputs) + _bytes(12, _value_info(output))
    opset = _bytes(1, "") + _int(2, OPSET)  # OperatorSetIdProto: domain, version
    return _int(1, IR_VERSION) + _bytes(2, "edgeformer.bench") + _bytes(7, graph) + _bytes(8, opset)


GRAPHS: dict[str, bytes] = {
    "matmul_fp32": one_node_model(
        "MatMul", [("a", FLOAT, ("M", "K")), ("b", FLOAT, ("K", "N"))], ("y", FLOAT, ("M", "N"))
    ),
    "matmul_int8": one_node_model(
        "MatMulInteger", [("a", UINT8, ("M", "K")), ("b", INT8, ("K", "N"))], ("y", INT32, ("M", "N"))
    ),
}
GRAPHS["bandwidth"] = GRAPHS["matmul_fp32"]


# ----- measuring -----------------------------------------------------------------------------------


def _timed_runs(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], warmup: int, iterations: int, budget_s: float
) -> list[float]:
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
    binding.bind_output(session.get_outputs()[0].name, "cpu")
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iterations and (len(samples) < 2 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter_ns()
        session.run_with_iobinding(binding)
        samples.append((time.perf_counter_ns() - t0) / 1e9)
    return samples


def measure_limits(
    threads: int,
    *,
    matmul_size: int = 1024,
    bandwidth_mb: int = 256,
    iterations: int = 10,
    budget_s: float = 3.0,
    spinning: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, dict]:
    """Peak fp32 MatMul GFLOP/s, int8 MatMulInteger GOP/s and weight-reading GB/s at ``threads``.

    ``matmul_size`` is N of the square products; ``bandwidth_mb`` the size of the fp32 matrix the
    matrix-vector product reads (keep it well above the last-level cache). Each measurement runs
    up to ``iterations`` times (at least twice) within about ``budget_s`` seconds after one warm-up.
    """
    if isinstance(matmul_size, bool) or not isinstance(matmul_size, int) or matmul_size < 16:
        raise OptionError(f"the limits' matmul size must be an integer >= 16, got {matmul_size!r}")
    if isinstance(bandwidth_mb, bool) or not isinstance(bandwidth_mb, int) or bandwidth_mb < 1:
        raise OptionError(f"the limits' bandwidth matrix size must be a positive number of MB, got {bandwidth_mb!r}")
    opts = session_options(threads=threads, spinning=spinning)
    rng = np.random.default_rng(0)
    n = matmul_size
    k = 4096 if bandwidth_mb * (1 << 20) >= 4096 * 4 * 64 else 256
    m = max(1, bandwidth_mb * (1 << 20) // (4 * k))
    plans: dict[str, tuple[dict[str, np.ndarray], float, str]] = {
        "matmul_fp32": (
            {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)},
            2.0 * n**3,
            "gflops",
        ),
        "matmul_int8": (
            {
                "a": rng.integers(0, 256, (n, n), dtype=np.uint8),
                "b": rng.integers(-128, 128, (n, n), dtype=np.int8),
            },
            2.0 * n**3,
            "gops",
        ),
        "bandwidth": (
            {"a": rng.standard_normal((1, k), dtype=np.float32), "b": rng.standard_normal((k, m), dtype=np.float32)},
            4.0 * k * m,
            "gbs",
        ),
    }
    out: dict[str, dict] = {}
    for name, (feeds, work, unit) in plans.items():
        log(f"limits: {name} at {threads} threads ...")
        session = ort.InferenceSession(GRAPHS[name], opts, providers=["CPUExecutionProvider"])
        samples = _timed_runs(session, feeds, warmup=1, iterations=iterations, budget_s=budget_s)
        shape = {"n": n} if name != "bandwidth" else {"k": k, "m": m, "bytes": 4 * k * m}
        out[name] = {unit: work / min(samples) / 1e9, "samples_s": samples, "work": work, **shape}
        del session, feeds
    return out

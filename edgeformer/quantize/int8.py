"""int8 graphs through onnxruntime's quantizer, with the settings chosen for the CPU.

Dynamic: weights int8, symmetric, per output channel; activations quantized at run time to uint8
(onnxruntime's MatMulInteger path). On x86 CPUs without VNNI the u8 x s8 kernel adds pairs of
products in 16 bits and saturates, so there weights use 7 bits (``reduce_range``); with VNNI (or
on ARM) the full 8 bits are safe. Static (QDQ): activation ranges from calibration data (MinMax,
Percentile or Entropy), QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer
kernels and that the NNAPI and QNN providers need.

Both run after fusion: attention stays MultiHeadAttention, its projections become int8 MatMuls;
in dynamic int8 an encoder's self-attention becomes one QAttention (``qattention``).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import platform
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeformer.targets import CALIBRATION_METHODS

QUANTIZABLE = ("MatMul", "Gather")  # projections and FFNs; the embedding tables
# Static (QDQ) quantizes MatMuls only, and every one of them: onnxruntime's QDQ MatMul ignores
# MatMulConstBOnly, so attention's activation x activation MatMuls (Q.K^T, softmax.V) get QDQ too
STATIC_OPS = ("MatMul",)
METHODS = CALIBRATION_METHODS
# whether onnxruntime's calibrator may speak (its print() lines and INFO logs), on stderr; the CLI's --verbose
VERBOSE: contextvars.ContextVar[bool] = contextvars.ContextVar("edgeformer_quantize_verbose", default=False)


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def needs_reduce_range(flags: set[str] | None = None) -> bool:
    """True on x86 without VNNI, where u8 x s8 products saturate a 16-bit accumulator."""
    flags = cpu_flags() if flags is None else flags
    if "asimd" in flags:  # ARM: its int8 dot products do not saturate
        return False
    if not flags:  # unknown: the safe choice on x86
        return platform.machine().lower() in ("x86_64", "amd64")
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def quantizable_nodes(model: onnx.ModelProto, *, static: bool = False) -> list[str]:
    """Names of the nodes the quantizer would touch. Dynamic: MatMuls with a constant weight,
    Gathers of a table. ``static``: every MatMul, attention's score and context products included:
    each is a node the search may keep in float, so with all of them in float the graph is the float one."""
    inits = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if static:
            if node.op_type in STATIC_OPS:
                names.append(node.name)
            continue
        matmul = node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in inits
        if matmul or (node.op_type == "Gather" and node.input[0] in inits):
            names.append(node.name)
    return names


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The quantizer selects nodes by name: give every node one."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return model


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer without its chatter: the calibrator print()s a few lines per call
    ("Number of tensors", "Finding optimal threshold ...": about 100 lines over a mixed-precision search)
    onto stdout, where the report and --json go. With VERBOSE it is kept, on stderr."""
    import onnxruntime as ort

    logger = logging.getLogger()
    level = logger.level
    verbose = VERBOSE.get()
    logger.setLevel(logging.INFO if verbose else logging.ERROR)  # the quantizer's "consider pre-processing"
    ort.set_default_logger_severity(2 if verbose else 3)
    chatter = sys.stderr if verbose else io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            yield
    finally:
        logger.setLevel(level)
        ort.set_default_logger_severity(2)


def quantize_dynamic(
    model: onnx.ModelProto,
    out: Path,
    *,
    exclude: Sequence[str] = (),
    reduce_range: bool | None = None,
    per_channel: bool = True,
) -> Path:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    reduce_range = needs_reduce_range() if reduce_range is None else reduce_range
    with _quiet():
        ort_quantize_dynamic(
            model,
            out,
            op_types_to_quantize=list(QUANTIZABLE),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            extra_options={"MatMulConstBOnly": True},
        )
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], names: set[str]) -> None:
        self._it = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - the quantizer does not rewind for these methods
        pass


def quantize_static(
    model: onnx.ModelProto,
    out: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    method: str = "minmax",
    exclude: Sequence[str] = (),
    reduce_range: bool | None = None,
    per_channel: bool = True,
) -> Path:
    """QDQ int8 with activation ranges from ``feeds``: activations uint8 (asymmetric), weights
    int8 symmetric per channel."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    reduce_range = needs_reduce_range() if reduce_range is None else reduce_range
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    names = {i.name for i in model.graph.input}
    with _quiet(), tempfile.TemporaryDirectory(dir=Path(out).parent) as tmp:  # beside out: the caller's scratch
        src = Path(tmp) / "float.onnx"
        onnx.save(model, src)
        ort_quantize_static(
            src,
            out,
            _Reader(feeds, names),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(STATIC_OPS),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=calibrate,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},  # MatMulConstBOnly: ignored by QDQ
        )
    return out


def settings(reduce_range: bool | None = None, *, static: bool = False) -> dict[str, Any]:
    rr = needs_reduce_range() if reduce_range is None else reduce_range
    return {
        "weights": "int8 symmetric, per output channel" + (", 7-bit (reduce_range: x86 without VNNI)" if rr else ""),
        "activations": "uint8",
        "reduce_range": rr,
        "ops": list(STATIC_OPS if static else QUANTIZABLE),
    }

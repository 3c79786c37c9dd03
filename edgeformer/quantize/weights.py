"""Weight-only reduced precisions: fp16 for GPU targets, int4 (MatMulNBits) for decoders.

fp16 converts weights and compute to half precision while inputs and outputs stay fp32 (Cast at
the edges), through onnxruntime's own converter; LayerNorm-family and softmax-heavy contrib ops
keep their fp32 accumulation inside the kernels. int4 quantizes the MatMul weights in blocks of
32 along the input dimension, symmetric, into onnxruntime's MatMulNBits, which dequantizes on the
fly: a 4-bit weight read is what decoding (memory-bound) wants.

int4 settings follow the CPU (``int4_settings``): MatMulNBits' ``accuracy_level`` 4 lets
onnxruntime quantize the activations to int8 per block and use int8 dot products, which it has
kernels for on x86 with AVX2 (faster with AVX-VNNI / AVX512-VNNI) and on ARM with the dot-product
extension; elsewhere level 1 (fp32 compute, dequantize on the fly). onnxruntime itself falls back
to the most accurate level it has a kernel for, so a bundle built on one CPU still runs on another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from edgeformer.quantize.int8 import _quiet, cpu_flags

BLOCK_SIZE = 32  # the smallest block onnxruntime's int8-compute kernels take everywhere: the most accurate
INT8_DOT = ("avx512_vnni", "avx_vnni", "avx2", "asimddp")  # flags of CPUs with MatMulNBits int8 kernels
SUFFIX = "_Q4"  # onnxruntime names a MatMul's MatMulNBits replacement NAME_Q4 (NAME_Q8 at 8 bits)
KEPT_BITS = 8  # what the search keeps out of int4: MatMulNBits at 8 bits, a quarter of fp32's bytes per token
SUFFIXES = {"int4": "_Q4", "int8": "_Q8"}


def to_fp16(model: onnx.ModelProto, out: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    onnx.save(half, out)
    return out


def int4_settings(flags: set[str] | None = None) -> dict[str, Any]:
    """The MatMulNBits settings for this CPU, with the reason, as the manifest records them."""
    flags = cpu_flags() if flags is None else flags
    found = [f for f in INT8_DOT if f in flags]
    level = 4 if found else 1
    return {
        "weights": f"int4 symmetric, blocks of {BLOCK_SIZE} along the input dimension (MatMulNBits)",
        "block_size": BLOCK_SIZE,
        "accuracy_level": level,
        "kept_bits": KEPT_BITS,
        "kept": f"the nodes the search keeps out of int4 are MatMulNBits at {KEPT_BITS} bits, same blocks",
        "compute": (
            f"int8 activations per block, int8 dot products (this CPU has {found[0]})"
            if found
            else "fp32 (no int8 dot-product kernels for this CPU: none of " + ", ".join(INT8_DOT) + ")"
        ),
    }


def int4_candidates(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls the int4 quantizer converts: a constant weight of rank 2 (or higher with
    unit leading dimensions). Gathers stay float: they read one row per token."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        dims = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if dims is not None and len(dims) >= 2 and all(d == 1 for d in dims[:-2]):
            names.append(node.name)
    return names


def to_int4(
    model: onnx.ModelProto,
    out: Path,
    *,
    exclude: tuple[str, ...] = (),
    settings: dict[str, Any] | None = None,
) -> Path:
    """``model``'s MatMuls in int4 except ``exclude`` (node names), which are MatMulNBits at
    ``settings["kept_bits"]`` (8; 0 keeps them float MatMuls), written to ``out``. ``model`` is left
    as it was: onnxruntime's quantizer rewrites the graph it is given in place, so a second call on
    the same model would find no MatMul left to keep out of int4."""
    settings = int4_settings() if settings is None else settings
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept_bits = int(settings.get("kept_bits", 0))
    copy = _nbits(copy, 4, settings, exclude=list(exclude))
    if exclude and kept_bits:
        copy = _nbits(copy, kept_bits, settings, include=list(exclude))
    onnx.save(copy, str(out))
    return out


def _nbits(
    model: onnx.ModelProto,
    bits: int,
    settings: dict[str, Any],
    *,
    exclude: Sequence[str] = (),
    include: Sequence[str] = (),
) -> onnx.ModelProto:
    """``model`` with its constant-weight MatMuls (``include`` only, when given; never ``exclude``) as
    MatMulNBits at ``bits``, symmetric, in the blocks and accuracy level of ``settings``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=bits,
            block_size=settings["block_size"],
            is_symmetric=True,
            accuracy_level=settings["accuracy_level"],
            nodes_to_exclude=list(exclude),
            nodes_to_include=list(include) or None,
        )
        quantizer.process()
    return quantizer.model.model


def int4_layout(graph: onnx.GraphProto, candidates: list[str]) -> dict[str, str]:
    """Each candidate's precision in a written graph: "int4" or "int8" (its MatMulNBits at 4 or 8 bits
    is there), "float" (the MatMul itself, reading a float weight), or "missing"."""
    inits = {i.name: i.data_type for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    layout = {}
    for name in candidates:
        node, layout[name] = nodes.get(name), "missing"
        for precision, suffix in SUFFIXES.items():
            quantized = nodes.get(name + suffix)
            if quantized is not None and quantized.op_type == "MatMulNBits" and _bits(quantized) == int(suffix[2:]):
                layout[name] = precision
        if node is not None and node.op_type == "MatMul" and inits.get(node.input[1]) == onnx.TensorProto.FLOAT:
            layout[name] = "float"
    return layout


def _bits(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "bits"), 4)

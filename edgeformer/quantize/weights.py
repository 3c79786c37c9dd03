"""Weight-only reduced precisions: fp16 for GPU targets, int4 (MatMulNBits) for decoders.

fp16 converts weights and compute to half precision while inputs and outputs stay fp32 (Cast at
the edges), through onnxruntime's own converter; LayerNorm-family and softmax-heavy contrib ops
keep their fp32 accumulation inside the kernels. int4 quantizes the MatMul weights in blocks of
32 along the input dimension, symmetric, into onnxruntime's MatMulNBits, which dequantizes on the
fly: a 4-bit weight read is what decoding (memory-bound) wants.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeformer.quantize.int8 import _quiet


def to_fp16(model: onnx.ModelProto, out: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    onnx.save(half, out)
    return out


def to_int4(model: onnx.ModelProto, out: Path, *, block_size: int = 32, exclude: tuple[str, ...] = ()) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        quantizer = MatMulNBitsQuantizer(
            model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=4, nodes_to_exclude=list(exclude)
        )
        quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out

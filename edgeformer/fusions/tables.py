"""Which passes run for which fusion form, in order: data, read by the driver in pipeline.py.

The order matters: masks become biases before attention is matched; GELU and skip-layer-norm fuse
before attention so that attention's neighbours are already in their final form. A pass that only
some exports want says so in its ``needs`` (see passes.NEEDS).
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.ort_fusions.attention import fuse_attention
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha
from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_layer_normalization

from edgeformer.fusions import (
    attention_output,
    erf_polynomial,
    gelu,
    layer_norm_decomposed,
    mask_arithmetic,
    mask_bias,
    mha_bnsh_cache,
    standard_attention,
    static_reduce_sum,
    symbolic_shapes,
)
from edgeformer.fusions.matmul_bias import bias_after_matmul
from edgeformer.fusions.packed_projections import pack_projections
from edgeformer.fusions.packed_weights import fold_packed_weights
from edgeformer.fusions.passes import (
    FusionOptions,
    FusionPass,
    cleanup,
    common_subexpressions,
    fold_constants,
    root_filtered,
    with_shapes,
)
from edgeformer.fusions.split_skip_norm import split_skip_layer_norm
from edgeformer.targets import FUSION_FORMS

# Form (c), for NNAPI, CoreML and QNN: only the ops on that provider's list (no contrib ops, no
# opset-23 Attention); attention stays MatMul + Softmax with finite additive mask biases.
PROVIDER_FORMS = ("nnapi", "coreml", "qnn")


# every rule set of edgeformer's own runs root-filtered (passes.root_filtered: the same rewrites, sooner)
_ATTENTION_OUTPUT = root_filtered(attention_output.rules)
_STANDARD_ATTENTION = root_filtered(standard_attention.rules)


def opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def _standard_attention(model: ir.Model) -> int:
    """Match attention (as SDPA) and lower it to ai.onnx Attention in one step, so no temporary
    node is ever left in the graph; below opset 23 there is no Attention op and nothing is done."""
    if opset(model) < standard_attention.OPSET:
        return 0
    fuse_sdpa(model, apply_shape_inference=True)
    _ATTENTION_OUTPUT.apply_to_model(model)
    return _STANDARD_ATTENTION.apply_to_model(model)


CLEANUP = FusionPass("cleanup", cleanup)
FINAL_CLEANUP = FusionPass("final_cleanup", fold_constants, count="nodes")
MASKS = (
    FusionPass("mask_to_bias", root_filtered(mask_bias.rules).apply_to_model),
    FusionPass("merge_mask_biases", root_filtered(mask_bias.merge_rules).apply_to_model),
    FusionPass("share_mask_bias", common_subexpressions, count="nodes"),
)
CONTRIB = (
    CLEANUP,
    FusionPass("symbolic_shapes", symbolic_shapes.apply, reasons=True),
    FusionPass("bias_after_matmul", bias_after_matmul, reasons=True),
    *MASKS,
    FusionPass("exporter_masks", root_filtered(mask_bias.exporter_mask_rules).apply_to_model),
    FusionPass("erf_gelu", fuse_erfgelu),
    FusionPass("erf_gelu_arrangements", root_filtered(gelu.erf_rules).apply_to_model),
    FusionPass("tanh_gelu", root_filtered(gelu.rules).apply_to_model),
    FusionPass("skip_layer_norm", fuse_skip_layer_normalization),
    FusionPass("sdpa", with_shapes(fuse_sdpa)),
    FusionPass("split_flat_attention_output", root_filtered(attention_output.rules).apply_to_model),
    FusionPass("mha", fuse_mha1),
    FusionPass("mha_transposed_key", fuse_mha2),
    FusionPass("mha_scale", fuse_mha_scale),
    FusionPass("mha_bias", fuse_mha_bias),
    FusionPass("attention", fuse_attention, needs=("packed_attention",)),
    FusionPass("bias_gelu", fuse_bias_gelu),
    FusionPass("sdpa_via_mha", replace_sdpa_by_mha),
    FusionPass("mha_bnsh_cache", root_filtered(mha_bnsh_cache.rules).apply_to_model),
    FusionPass("packed_weights", fold_packed_weights, reasons=True),
    FusionPass("packed_projections", pack_projections, reasons=True),
    FusionPass("split_skip_layer_norm", split_skip_layer_norm, needs=("cpu_kernels",), reasons=True),
    FINAL_CLEANUP,
)
# Standard ops only (opset 23 Attention; LayerNormalization and Gelu come out of the exporter as
# such at that opset): the same attention matcher, lowered to ai.onnx Attention.
STANDARD = (
    CLEANUP,
    FusionPass("symbolic_shapes", symbolic_shapes.apply, reasons=True),
    *MASKS,
    FusionPass("finite_mask_fill", root_filtered(mask_bias.finite_fill_rules).apply_to_model),
    FusionPass("exporter_masks", root_filtered(mask_bias.exporter_mask_rules).apply_to_model),
    FusionPass("standard_attention", _standard_attention),
    FINAL_CLEANUP,
)
# CoreML (coreml_supported_mlprogram_ops.md) and QNN take LayerNormalization, Erf / Gelu, Where and
# And as they are. Static shapes (the targets fix them before fusing) fold the shape subgraphs away.
PROVIDER = (
    CLEANUP,
    *MASKS,
    FusionPass("finite_mask_fill", root_filtered(mask_bias.finite_fill_rules).apply_to_model),
    FINAL_CLEANUP,
)
# NNAPI (nnapi_supported_ops.md) has no LayerNormalization, Erf, Where, And nor ReduceSum: they are
# rewritten into ops on its list.
NNAPI = (
    *PROVIDER[:-1],
    FusionPass("mask_arithmetic", mask_arithmetic.apply_to_model),
    FusionPass("layer_norm_decomposed", root_filtered(layer_norm_decomposed.rules).apply_to_model),
    FusionPass("erf_polynomial", root_filtered(erf_polynomial.rules).apply_to_model),
    FusionPass("static_reduce_sum", root_filtered(static_reduce_sum.rules).apply_to_model),
    FINAL_CLEANUP,
)
TABLES: dict[str, tuple[FusionPass, ...]] = {
    "contrib": CONTRIB,
    "standard": STANDARD,
    "none": (CLEANUP,),
    "nnapi": NNAPI,
    "coreml": PROVIDER,
    "qnn": PROVIDER,
}
if set(TABLES) != set(FUSION_FORMS):  # one vocabulary: the forms config accepts are the tables here
    raise RuntimeError(f"fusion tables {sorted(TABLES)} differ from targets.FUSION_FORMS {FUSION_FORMS}")


def passes_for(form: str, options: FusionOptions) -> list[FusionPass]:
    """The passes of ``form`` that ``options`` asks for, in order."""
    if form not in TABLES:
        raise ValueError(f"fusion form {form!r} is not one of {', '.join(FUSION_FORMS)}")
    return [p for p in TABLES[form] if p.applies(options)]

"""The fusion stage: an ordered list of passes over an onnx-ir model, counted and checked.

Every pass returns how many rewrites it made; after every pass that changed the graph, the model
is run under onnxruntime on the same inputs as the unfused graph and compared, so a pass that
changes the numbers is named. The report counts, per kind of block (attention, layer norm,
GELU), how many the source graph had and how many fused, and says why the others did not.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime as ort
from onnxscript.optimizer import optimize
from onnxscript.rewriter.ort_fusions import shape_optimization
from onnxscript.rewriter.ort_fusions.attention import fuse_attention
from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
from onnxscript.rewriter.ort_fusions.erfgelu import fuse_erfgelu
from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha
from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_layer_normalization

from edgeformer.errors import ParityError
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
from edgeformer.fusions.miss_reasons import gelu_tanh_nodes, why_not
from edgeformer.fusions.packed_projections import pack_projections
from edgeformer.fusions.packed_weights import fold_packed_weights
from edgeformer.fusions.split_skip_norm import split_skip_layer_norm

Feeds = dict[str, np.ndarray]
ATTENTION_OPS = {"MultiHeadAttention", "Attention", "GroupQueryAttention"}
NORM_OPS = {
    "LayerNormalization",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
}
GELU_OPS = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu"}
FORMS = ("contrib", "standard", "none", "nnapi", "coreml", "qnn")
# Providers whose layer norms run on onnxruntime's CPU kernels (XNNPACK takes no layer norm). For
# them the contrib form keeps LayerNormalization: onnxruntime's CPU SkipLayerNormalization is
# 3-4x slower than Add + LayerNormalization (see split_skip_norm.py).
CPU_KERNEL_PROVIDERS = ("cpu", "xnnpack")
PROVIDER_FORMS = ("nnapi", "coreml", "qnn")  # form (c): only the ops that provider's list has


@dataclass
class PassRecord:
    name: str
    rewrites: int
    nodes: int
    seconds: float
    max_rel_error: float | None = None  # against the unfused graph; None when not run
    rolled_back: str = ""  # why the pass was undone
    deferred: bool = False  # its graph held intermediate ops; checked with the next pass that could run


@dataclass
class FusionReport:
    form: str
    nodes_before: int
    nodes_after: int = 0
    passes: list[PassRecord] = field(default_factory=list)
    coverage: dict[str, dict[str, int]] = field(default_factory=dict)
    not_fused: list[dict[str, str]] = field(default_factory=list)
    debug: str = ""
    parity_not_checked: str = ""  # why the passes were not checked against the unfused graph

    @property
    def counts(self) -> dict[str, int]:
        return {p.name: p.rewrites for p in self.passes if p.rewrites and p.name != "cleanup"}

    @property
    def complete(self) -> bool:
        return not self.not_fused

    def to_dict(self) -> dict[str, Any]:
        out = {
            "form": self.form,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "counts": self.counts,
            "coverage": self.coverage,
            "complete": self.complete,
            "not_fused": self.not_fused,
            "passes": [asdict(p) for p in self.passes],
            "rolled_back": {p.name: p.rolled_back for p in self.passes if p.rolled_back},
            "parity_not_checked": self.parity_not_checked or None,
        }
        return out


class FusionParityError(ParityError):
    """A pass changed what the graph computes beyond tolerance; the message names the pass."""


def _op_counts(model: ir.Model) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.all_nodes())


def cleanup(model: ir.Model) -> int:
    """Constant folding, shape-subgraph simplification, duplicate initializers, CSE, dead code."""
    before = len(list(model.graph.all_nodes()))
    common_passes.ShapeInferencePass()(model)
    optimize(model)
    shape_optimization.rules.apply_to_model(model)
    common_passes.DeduplicateInitializersPass()(model)
    common_passes.CommonSubexpressionEliminationPass()(model)
    optimize(model)
    common_passes.RemoveUnusedNodesPass()(model)
    return max(0, before - len(list(model.graph.all_nodes())))


def _cse(model: ir.Model) -> int:
    common_passes.CommonSubexpressionEliminationPass()(model)
    return 0


def _with_shapes(fn: Callable[..., int]) -> Callable[[ir.Model], int]:
    return lambda model: fn(model, apply_shape_inference=True)


# The order matters: masks become biases before attention is matched; GELU and skip-layer-norm
# fuse before attention so that attention's neighbours are already in their final form.
CONTRIB_PASSES: list[tuple[str, Callable[[ir.Model], int]]] = [
    ("cleanup", cleanup),
    ("symbolic_shapes", symbolic_shapes.apply),
    ("bias_after_matmul", bias_after_matmul),
    ("mask_to_bias", mask_bias.rules.apply_to_model),
    ("merge_mask_biases", mask_bias.merge_rules.apply_to_model),
    ("share_mask_bias", _cse),
    ("exporter_masks", mask_bias.exporter_mask_rules.apply_to_model),
    ("erf_gelu", fuse_erfgelu),
    ("erf_gelu_arrangements", gelu.erf_rules.apply_to_model),
    ("tanh_gelu", gelu.rules.apply_to_model),
    ("skip_layer_norm", fuse_skip_layer_normalization),
    ("sdpa", _with_shapes(fuse_sdpa)),
    ("split_flat_attention_output", attention_output.rules.apply_to_model),
    ("mha", fuse_mha1),
    ("mha_transposed_key", fuse_mha2),
    ("mha_scale", fuse_mha_scale),
    ("mha_bias", fuse_mha_bias),
    ("attention", fuse_attention),
    ("bias_gelu", fuse_bias_gelu),
    ("sdpa_via_mha", replace_sdpa_by_mha),
    ("mha_bnsh_cache", mha_bnsh_cache.rules.apply_to_model),
    ("packed_weights", fold_packed_weights),
    ("packed_projections", pack_projections),
    ("split_skip_layer_norm", split_skip_layer_norm),  # only for CPU_KERNEL_PROVIDERS, see fuse_model
    ("final_cleanup", lambda m: (optimize(m), 0)[1]),
]


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def _standard_attention(model: ir.Model) -> int:
    """Match attention (as SDPA) and lower it to ai.onnx Attention in one step, so no temporary
    node is ever left in the graph; below opset 23 there is no Attention op and nothing is done."""
    if _opset(model) < standard_attention.OPSET:
        return 0
    fuse_sdpa(model, apply_shape_inference=True)
    attention_output.rules.apply_to_model(model)
    return standard_attention.rules.apply_to_model(model)


# Standard ops only (opset 23 Attention; LayerNormalization and Gelu come out of the exporter as
# such at that opset): the same attention matcher, lowered to ai.onnx Attention.
STANDARD_PASSES: list[tuple[str, Callable[[ir.Model], int]]] = [
    ("cleanup", cleanup),
    ("symbolic_shapes", symbolic_shapes.apply),
    ("mask_to_bias", mask_bias.rules.apply_to_model),
    ("merge_mask_biases", mask_bias.merge_rules.apply_to_model),
    ("share_mask_bias", _cse),
    ("finite_mask_fill", mask_bias.finite_fill_rules.apply_to_model),
    ("exporter_masks", mask_bias.exporter_mask_rules.apply_to_model),
    ("standard_attention", _standard_attention),
    ("final_cleanup", lambda m: (optimize(m), 0)[1]),
]


# Form (c), for NNAPI, CoreML and QNN: none of them takes onnxruntime's contrib ops or the opset-23
# Attention, so attention stays MatMul + Softmax; masks become finite additive biases. CoreML
# (coreml_supported_mlprogram_ops.md) and QNN take LayerNormalization, Erf / Gelu, Where and And as
# they are. NNAPI (nnapi_supported_ops.md) has none of these nor ReduceSum: they are rewritten into
# ops on its list. Static shapes (the targets fix them before fusing) fold the shape subgraphs away.
PROVIDER_PASSES: list[tuple[str, Callable[[ir.Model], int]]] = [
    ("cleanup", cleanup),
    ("mask_to_bias", mask_bias.rules.apply_to_model),
    ("merge_mask_biases", mask_bias.merge_rules.apply_to_model),
    ("share_mask_bias", _cse),
    ("finite_mask_fill", mask_bias.finite_fill_rules.apply_to_model),
    ("final_cleanup", lambda m: (optimize(m), 0)[1]),
]
NNAPI_PASSES: list[tuple[str, Callable[[ir.Model], int]]] = [
    *PROVIDER_PASSES[:-1],
    ("mask_arithmetic", mask_arithmetic.apply_to_model),
    ("layer_norm_decomposed", layer_norm_decomposed.rules.apply_to_model),
    ("erf_polynomial", erf_polynomial.rules.apply_to_model),
    ("static_reduce_sum", static_reduce_sum.rules.apply_to_model),
    PROVIDER_PASSES[-1],
]


def _run(model: ir.Model, feeds: list[Feeds]) -> list[list[np.ndarray]]:
    """The graph's outputs on each of ``feeds``; raises what onnxruntime raises when it cannot
    load or run the graph (the caller names the pass, or says why nothing was checked)."""
    proto = ir.to_proto(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4  # a failure is reported by the caller, not logged to stderr as well
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [session.run(names, f) for f in feeds]


INTERMEDIATE_DOMAIN = "ai.onnxruntime._fusion"  # onnxscript's ort_fusions: SDPA, MHA before its final form


def _intermediate_ops(model: ir.Model) -> set[str]:
    return {f"{n.domain}:{n.op_type}" for n in model.graph.all_nodes() if n.domain == INTERMEDIATE_DOMAIN}


def _check(
    model: ir.Model, feeds: list[Feeds], reference: list[list[np.ndarray]], tolerance: float
) -> tuple[float | None, str, bool]:
    """Run the rewritten graph against the unfused outputs: (worst error, problem, deferred).
    A graph holding the rewriter's intermediate ops (a fusion that a later pass completes) cannot
    load in onnxruntime; its check is deferred to the next pass, and a failure then undoes both."""
    try:
        got = _run(model, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's failure to load or run the rewritten graph
        if _intermediate_ops(model):
            return None, "", True
        return None, f"the graph no longer runs ({_ort_message(exc)})", False
    error = _max_rel(reference, got)
    if error > tolerance:
        return error, f"it changed the outputs by {error:.3g} of their scale (tolerance {tolerance:g})", False
    return error, "", False


def _undo(model: ir.Model, restore_point: Any, records: list[PassRecord], problem: str, log: Callable) -> ir.Model:
    """Put the graph back to ``restore_point`` and mark ``records`` (the last one the pass whose
    check failed) as undone, naming the problem."""
    model = _restore(model, restore_point)
    undone = [r for r in records if r.rewrites or r is records[-1]]
    if len(undone) > 1:
        names = " + ".join(r.name for r in undone)
        problem = f"{problem} (checked as one step, {names}: the graph between them does not run)"
    for record in records:
        if record in undone:
            record.rolled_back, record.rewrites = problem, 0
            log(f"  {record.name}: undone, {problem}")
        record.nodes = len(list(model.graph.all_nodes()))
    return model


def _ort_message(exc: Exception) -> str:
    """The informative part of an onnxruntime error: the node it failed in and its status message
    without the source location and failed condition, first line, bounded."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    node = re.search(r"while running (\S+) node\. Name:'([^']*)'", text)
    for marker in ("Status Message: ", "] : "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    if text.startswith("/") and " was false. " in text:  # "/src/file.h:91 Func(...) cond was false. Message"
        text = text.split(" was false. ", 1)[1]
    if node:
        text = f"{node[1]} node {node[2]!r}: {text}" if node[2] else f"{node[1]} node: {text}"
    return text[:300]


def _max_rel(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    worst = 0.0
    for ref_outs, got_outs in zip(reference, got, strict=True):
        for r, g in zip(ref_outs, got_outs, strict=True):
            if r.size == 0:
                continue
            err = float(np.abs(r.astype(np.float64) - g.astype(np.float64)).max())
            worst = max(worst, err / max(1.0, float(np.abs(r).max())))
    return worst


def _candidates(model: ir.Model) -> dict[str, int]:
    ops = _op_counts(model)
    return {
        "attention": ops["Softmax"],
        "layer_norm": ops["LayerNormalization"] + ops["ReduceMean"] // 2,
        # decomposed (erf or tanh form) or already one op (the standard Gelu, from opset 20)
        "gelu": ops["Erf"] + len(gelu_tanh_nodes(model)) + sum(ops[o] for o in GELU_OPS),
    }


def _standard_leftovers(model: ir.Model, not_fused: list[dict[str, str]]) -> list[dict[str, str]]:
    """In the standard form, say plainly when the opset is what stopped attention fusing."""
    if _opset(model) >= standard_attention.OPSET:
        return not_fused
    why = (
        f"the model's opset {_opset(model)} has no standard Attention op (it needs opset "
        f"{standard_attention.OPSET}: export with the portable-fp32 target)"
    )
    return [dict(item, reason=why) if item["kind"] == "attention" else item for item in not_fused]


def _restore(model: ir.Model, backup: Any) -> ir.Model:
    """Put the graph back as it was before a pass, in the same Model object."""
    restored = ir.from_proto(backup)
    model.graph = restored.graph  # (the graph carries the opset imports)
    model.functions.clear()
    model.functions.update(restored.functions)
    return model


def fuse_model(
    model: ir.Model,
    form: str = "contrib",
    *,
    feeds: list[Feeds] | None = None,
    tolerance: float = 1e-4,
    debug: bool = False,
    strict: bool = False,
    packed_attention: bool = True,
    providers: tuple[str, ...] = ("cpu",),
    log: Callable[[str], None] = lambda _m: None,
) -> FusionReport:
    """Fuse ``model`` in place. With ``feeds``, parity against the unfused graph is checked after
    every pass that rewrote something; a pass beyond ``tolerance`` raises FusionParityError.
    ``packed_attention=False`` keeps attention as MultiHeadAttention with separate projections.
    ``providers`` (the target's, in order of preference) choose among forms: SkipLayerNormalization
    is split back into Add + LayerNormalization when the first one runs onnxruntime's CPU kernels
    (CPU_KERNEL_PROVIDERS); GPU providers keep the fused op."""
    # A pass whose graph no longer runs or no longer matches the unfused numbers is undone and
    # named in the report (rolled_back); the blocks it would have fused are then listed as not fused.
    if form not in FORMS:
        raise ValueError(f"fusion form {form!r} is not one of {', '.join(FORMS)}")
    report = FusionReport(form, len(list(model.graph.all_nodes())))
    reference = None
    if not feeds:
        report.parity_not_checked = "no inputs were given for the check"
    else:
        try:
            reference = _run(model, feeds)
        except Exception as exc:  # noqa: BLE001 - any onnxruntime failure on the source graph
            report.parity_not_checked = f"the unfused graph does not run under onnxruntime ({_ort_message(exc)})"
    passes = {
        "contrib": CONTRIB_PASSES,
        "standard": STANDARD_PASSES,
        "none": CONTRIB_PASSES[:1],
        "nnapi": NNAPI_PASSES,
        "coreml": PROVIDER_PASSES,
        "qnn": PROVIDER_PASSES,
    }[form]
    if not packed_attention:
        # For int8: attention stays MultiHeadAttention with its projections as MatMuls, which the
        # quantizer turns into int8 MatMuls; the packed Attention op would keep them in float.
        passes = [p for p in passes if p[0] != "attention"]
    if not providers or providers[0] not in CPU_KERNEL_PROVIDERS:
        passes = [p for p in passes if p[0] != "split_skip_layer_norm"]
    before = None
    restore_point: Any = None  # the graph as it was at the last check that ran (or before the first pass)
    pending: list[PassRecord] = []  # passes since then whose graph held intermediate ops (see _check)
    for name, fn in passes:
        start = time.perf_counter()
        if reference is not None and not pending:
            restore_point = ir.to_proto(model)
        rewrites = int(fn(model) or 0)
        record = PassRecord(name, rewrites, len(list(model.graph.all_nodes())), round(time.perf_counter() - start, 3))
        report.passes.append(record)
        if name == "cleanup":
            before = _candidates(model)
        if rewrites:
            log(f"  {name}: {rewrites}")
        if reference is None or feeds is None or not (rewrites or name.endswith("cleanup")):
            continue
        record.max_rel_error, problem, deferred = _check(model, feeds, reference, tolerance)
        if deferred:
            record.deferred = True
            pending.append(record)
            continue
        if problem:
            if strict:
                culprits = " + ".join(repr(r.name) for r in [*pending, record])
                raise FusionParityError(f"fusion pass {culprits}: {problem}")
            model = _undo(model, restore_point, [*pending, record], problem, log)
        pending.clear()
    if pending:  # the last passes left the rewriter's intermediate ops: a graph onnxruntime cannot run
        problem = f"it left {', '.join(sorted(_intermediate_ops(model)))}, which onnxruntime cannot run"
        if strict:
            raise FusionParityError(f"fusion pass {pending[0].name!r}: {problem}")
        model = _undo(model, restore_point, pending, problem, log)
    ops = _op_counts(model)
    assert before is not None
    report.nodes_after = len(list(model.graph.all_nodes()))
    report.coverage = {
        "attention": {"blocks": before["attention"], "fused": sum(ops[o] for o in ATTENTION_OPS)},
        "layer_norm": {
            "blocks": before["layer_norm"],
            "fused": sum(ops[o] for o in NORM_OPS if o != "EmbedLayerNormalization"),
        },
        "gelu": {"blocks": before["gelu"], "fused": sum(ops[o] for o in GELU_OPS)},
    }
    if form not in ("none", *PROVIDER_FORMS):  # form (c) keeps attention and GELU as ops on the provider's list
        report.not_fused, report.debug = why_not(model, debug)
        if form == "standard":
            report.not_fused = _standard_leftovers(model, report.not_fused)
    return report

"""The contract every fusion pass keeps, on onnx-ir's pass infrastructure.

A pass is an ``onnx_ir.passes.InPlacePass``: called on a model it rewrites it in place and returns
a ``FusionResult`` (onnx-ir's ``PassResult`` with the number of rewrites), whose ``modified`` is
true exactly when the graph changed, so the driver checks every pass that changed something and
no other. What a pass needs of the export (the packed Attention op, onnxruntime's CPU kernels) is
declared on the pass as data (``needs``), never decided by its name. The rule functions stay plain
``model -> rewrites`` functions (onnxscript's ``fuse_*``, rule sets' ``apply_to_model``, the
walkers here); passes whose function does not count (constant folding, CSE) count the nodes they
removed instead. A hand-written walker (``reasons=True``) also takes a list to which it adds every
candidate it left as it was, with its reason (``miss_reasons.skip``); the result carries them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.optimizer import _constant_folding
from onnxscript.rewriter import RewriteRule, RewriteRuleSet
from onnxscript.rewriter._matcher import SimplePatternMatcher
from onnxscript.rewriter._pattern_ir import StringConstantPattern
from onnxscript.rewriter.ort_fusions import shape_optimization

Rewrite = Callable[[ir.Model], int]
Walker = Callable[[ir.Model, list[dict[str, str]]], int]  # a rewrite that says why it left each candidate
# Providers whose layer norms run on onnxruntime's CPU kernels (XNNPACK takes no layer norm). For
# them the contrib form keeps LayerNormalization: onnxruntime's CPU SkipLayerNormalization is
# 3-4x slower than Add + LayerNormalization (see split_skip_norm.py).
CPU_KERNEL_PROVIDERS = ("cpu", "xnnpack")


@dataclass(frozen=True)
class FusionOptions:
    """What the export asks of the fused graph; a pass's ``needs`` are read against it."""

    packed_attention: bool = True  # False for int8: attention keeps its projections as MatMuls
    providers: tuple[str, ...] = ("cpu",)


NEEDS: dict[str, Callable[[FusionOptions], bool]] = {
    # packing the projections into one Attention op keeps them out of the int8 quantizer's reach
    "packed_attention": lambda o: o.packed_attention,
    # SkipLayerNormalization split back for the providers that run onnxruntime's CPU kernels
    "cpu_kernels": lambda o: bool(o.providers) and o.providers[0] in CPU_KERNEL_PROVIDERS,
}


@dataclass
class FusionResult(ir.passes.PassResult):
    rewrites: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # a walker's candidates left, with its reasons


class FusionPass(ir.passes.InPlacePass):
    """One named rewrite. ``count="nodes"`` for functions that do not count their rewrites: the
    pass then reports how many nodes it removed."""

    def __init__(
        self,
        name: str,
        rewrite: Rewrite,
        *,
        needs: tuple[str, ...] = (),
        count: str = "rewrites",
        reasons: bool = False,
    ) -> None:
        unknown = set(needs) - set(NEEDS)
        if unknown or count not in ("rewrites", "nodes"):
            raise ValueError(f"fusion pass {name!r}: unknown needs {sorted(unknown)} or count {count!r}")
        self.name, self.rewrite, self.needs, self.count = name, rewrite, needs, count
        self.reasons = reasons  # the rewrite is a Walker: it records why it left each candidate

    def applies(self, options: FusionOptions) -> bool:
        return all(NEEDS[need](options) for need in self.needs)

    def call(self, model: ir.Model) -> FusionResult:
        before = node_count(model)
        skipped: list[dict[str, str]] = []
        rewrites = int((cast(Walker, self.rewrite)(model, skipped) if self.reasons else self.rewrite(model)) or 0)
        if self.count == "nodes":
            rewrites = max(0, before - node_count(model))
        return FusionResult(model, modified=rewrites > 0, rewrites=rewrites, skipped=skipped)

    def __repr__(self) -> str:
        return f"FusionPass({self.name!r}, needs={self.needs})"


def node_count(model: ir.Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())


class _RootFiltered:
    """A rewrite rule that turns a node away at once when its op type is not the one its pattern
    ends in. onnxscript's matcher tries every rule on every node and compares the op type first
    (``NodePattern.matches``), so the answer is the same; only the setup of a match per rule and node
    (and, for a pattern with several outputs, a walk over the whole graph) is saved: on BERT-base
    the default rules alone made 200,000 such attempts per export. Everything else is the rule's."""

    def __init__(self, rule: RewriteRule, op_type: str) -> None:
        self._rule, self._op_type = rule, op_type

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rule, name)

    def try_rewrite(self, model: ir.Model, graph: Any, node: ir.Node, **kwargs: Any) -> Any:
        if node.op_type != self._op_type and kwargs.get("tracer") is None:
            return None
        return self._rule.try_rewrite(model, graph, node, **kwargs)


def _root_op(rule: Any) -> str | None:
    """The op type a rule's match starts from, when onnxscript's plain matcher compares it as a
    fixed string (the first output node of the pattern); None when it is anything else."""
    matcher, pattern = getattr(rule, "_matcher", None), getattr(rule, "_target_pattern", None)
    if type(matcher) is not SimplePatternMatcher or pattern is None or not pattern.output_nodes:
        return None
    op = pattern.output_nodes[0].op
    return op.value() if isinstance(op, StringConstantPattern) else None


def root_filtered(rules: RewriteRuleSet | tuple[RewriteRule, ...]) -> RewriteRuleSet:
    """The same rules, in the same order, each skipping at once the nodes it cannot match."""
    ruleset = copy.copy(rules) if isinstance(rules, RewriteRuleSet) else RewriteRuleSet(list(rules))
    kept = ruleset.rules
    filtered = [_RootFiltered(r, op) if (op := _root_op(r)) is not None else r for r in kept]
    # a _RootFiltered stands in for its rule: the rule set calls try_rewrite and reads attributes, both delegated
    ruleset.rules = cast(list[RewriteRule], filtered)
    return ruleset


_DEFAULT_RULES = root_filtered(rewriter._DEFAULT_REWRITE_RULES)
_SHAPE_RULES = root_filtered(shape_optimization.rules)


def optimize(model: ir.Model) -> None:
    """onnxscript's ``optimize`` (optimizer/_optimizer.py ``optimize_ir`` with its defaults, onnxscript
    0.7): the same passes in the same order, its default rewrite rules root-filtered."""
    fold = _constant_folding.FoldConstantsPass(
        shape_inference=True,
        input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
        output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
        should_fold=lambda node: None,
    )
    loop = [
        fold,
        rewriter.RewritePass(_DEFAULT_RULES),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.RemoveUnusedFunctionsPass(),
        common_passes.RemoveUnusedOpsetsPass(),
    ]
    ir.passes.Sequential(
        common_passes.InlinePass(),
        ir.passes.PassManager(loop, steps=2, early_stop=True),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.LiftSubgraphInitializersToMainGraphPass(),
        common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(),
        common_passes.OutputFixPass(),
        common_passes.NameFixPass(),
    )(model)


def cleanup(model: ir.Model) -> int:
    """Constant folding, shape-subgraph simplification, duplicate initializers, CSE, dead code;
    returns the nodes removed."""
    before = node_count(model)
    common_passes.ShapeInferencePass()(model)
    optimize(model)
    _SHAPE_RULES.apply_to_model(model)
    common_passes.DeduplicateInitializersPass()(model)
    common_passes.CommonSubexpressionEliminationPass()(model)
    optimize(model)
    common_passes.RemoveUnusedNodesPass()(model)
    return max(0, before - node_count(model))


def common_subexpressions(model: ir.Model) -> int:
    """Merge identical subgraphs (the mask bias each layer computes again): counted in nodes."""
    common_passes.CommonSubexpressionEliminationPass()(model)
    common_passes.RemoveUnusedNodesPass()(model)
    return 0


def fold_constants(model: ir.Model) -> int:
    """onnxscript's optimizer (constant folding, dead code): counted in nodes."""
    optimize(model)
    return 0


def with_shapes(fn: Callable[..., int]) -> Rewrite:
    """An onnxscript fusion that needs shape inference first (``fuse_sdpa``)."""

    def rewrite(model: ir.Model) -> int:
        return int(fn(model, apply_shape_inference=True) or 0)

    rewrite.__name__ = getattr(fn, "__name__", "with_shapes")
    return rewrite

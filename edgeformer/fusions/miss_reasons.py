"""Why a block did not fuse, in the words of the closest rule of its own kind.

For every attention softmax, GELU and decomposed layer norm left in the fused graph, the rules of
that kind (attention: the SDPA matcher both fused forms start from; GELU: the Erf and tanh rules)
are matched again with a tracer that changes nothing, and the attempt that got furthest at that
block is reported: the rule's name, and its failed check or where its pattern stopped. An attempt
belongs to a block when it matched the block's node or was rooted at most a few nodes after it.

The hand-written walkers (matmul_bias, packed_weights, packed_projections, split_skip_norm,
symbolic_shapes) say it themselves: each candidate node they look at and leave as it was is
recorded with ``skip`` (the node and the walker's reason), and the fusion report lists them per pass.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass

import onnx_ir as ir
from onnxscript.rewriter import MatchingTracer, MatchStatus, pattern
from onnxscript.rewriter.ort_fusions import erfgelu, sdpa

from edgeformer.fusions import gelu

ATTENTION_RULES = sdpa.sdpa_rules
ERF_GELU_RULES = pattern.RewriteRuleSet([*erfgelu.rules.rules, *gelu.erf_rules.rules])
BANDED = (
    "banded local or sparse attention (blocked products over the window, edgeformer/nn/banded.py): no fused "
    "attention op takes a band, so it stays MatMul + Softmax in standard ops, O(sequence x window)"
)
DOWNSTREAM = 3  # an attempt rooted this many nodes after a block's node (Softmax -> MatMul) belongs to it
Skipped = list[dict[str, str]]  # the candidates a walker left as they were: {"node": name, "reason": why}


def skip(skipped: Skipped | None, node: ir.Node, reason: str) -> None:
    """Record that a hand-written walker left ``node``, a candidate of its rewrite, and why."""
    if skipped is not None:
        skipped.append({"node": node.name or node.op_type, "reason": reason})


def producer_name(value: ir.Value | None) -> str:
    """What makes ``value``, for a reason: an op type, or where a value without a producer comes from."""
    if value is None:
        return "no value"
    producer = value.producer()
    if producer is not None:
        return producer.op_type
    return "an initializer" if value.is_initializer() else "a graph input"


@dataclass
class Attempt:
    score: int  # the tracer's: matched nodes + 100 per status step (no match < check failed < success)
    rule: str
    status: MatchStatus
    reason: str
    nodes: frozenset[int]  # id() of the matched nodes


class BlockTracer(MatchingTracer):
    """A MatchingTracer that also keeps, per root node, the attempt of any rule that got furthest
    (the stock tracer keeps one best match per rule, over the whole graph)."""

    def __init__(self, rule_names: dict[int, str]) -> None:
        super().__init__()
        self.names = rule_names
        self.best: dict[int, Attempt] = {}

    def log(self, rule, container, node, match_result, status) -> None:
        super().log(rule, container, node, match_result, status)
        score = len(match_result.nodes) + int(status.value) * 100
        held = self.best.get(id(node))
        if held is None or score > held.score:
            nodes = frozenset(id(n) for n in match_result.nodes)
            name = self.names.get(id(rule)) or getattr(rule, "name", None) or type(rule).__name__
            self.best[id(node)] = Attempt(score, name, status, match_result.reason or "", nodes)


def _rule_names(kind: str, rules: pattern.RewriteRuleSet) -> dict[int, str]:
    return {id(rule): rule.name or f"{kind} rule {i}" for i, rule in enumerate(rules.rules)}


def _trace(model: ir.Model, kind: str, rules: pattern.RewriteRuleSet) -> tuple[BlockTracer, str]:
    """Match ``rules`` over ``model`` without changing it: the tracer, and the stock report's text."""
    tracer = BlockTracer(_rule_names(kind, rules))
    rules.apply_to_model(model, tracer=tracer)  # with a tracer, nothing is rewritten
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tracer.report()
    return tracer, buffer.getvalue()


def _downstream(node: ir.Node, hops: int) -> Iterable[ir.Node]:
    frontier = [node]
    for _ in range(hops):
        frontier = [use.node for n in frontier for out in n.outputs for use in out.uses()]
        yield from frontier


def closest_attempt(tracer: BlockTracer, node: ir.Node) -> Attempt | None:
    """The furthest attempt that matched ``node`` or was rooted just after it."""
    candidates = [a for a in tracer.best.values() if id(node) in a.nodes]
    candidates += [tracer.best[id(n)] for n in _downstream(node, DOWNSTREAM) if id(n) in tracer.best]
    candidates = [a for a in candidates if a.score > 0]
    return max(candidates, key=lambda a: a.score, default=None)


def _describe(kind: str, attempt: Attempt, node: ir.Node) -> str:
    if attempt.status == MatchStatus.SUCCESS:
        return (
            f"{kind} rule {attempt.rule} matches this block, but the passes that complete the fused op "
            "did not (see the passes undone, if any)"
        )
    if attempt.status == MatchStatus.CONDITION_FAILED:
        return f"{kind} rule {attempt.rule}, check failed: {attempt.reason or 'no reason given'}"
    return f"{kind} rule {attempt.rule}, pattern stops: {attempt.reason or 'no match'} ({input_chain(node)})"


def is_banded(node: ir.Node) -> bool:
    """A Softmax over (batch, heads, blocks, block, keys): the banded attention of nn/banded.py."""
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    return shape is not None and shape.rank() == 5


def input_chain(node: ir.Node) -> str:
    """What feeds ``node``, three producers up: the form the reader sees no rule knows."""
    chain, current = [], node
    for _ in range(3):
        first = current.inputs[0] if current.inputs else None
        producer = first.producer() if first is not None else None
        if producer is None:
            break
        chain.append(producer.op_type)
        current = producer
    return "its input comes from " + " <- ".join([node.op_type, *chain])


def is_gelu_tanh(node: ir.Node) -> bool:
    """A Tanh inside a tanh-approximated GELU has x**3 (a Pow) a few producers up; a pooler's
    Tanh does not."""
    frontier, seen = [node], 0
    while frontier and seen < 12:
        current = frontier.pop()
        seen += 1
        for value in current.inputs:
            producer = value.producer() if value is not None else None
            if producer is None:
                continue
            if producer.op_type == "Pow":
                return True
            frontier.append(producer)
    return False


def gelu_tanh_nodes(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph.all_nodes() if n.op_type == "Tanh" and is_gelu_tanh(n)]


def _blocks(model: ir.Model) -> list[tuple[str, list[ir.Node], pattern.RewriteRuleSet]]:
    nodes = list(model.graph.all_nodes())
    return [
        ("attention", [n for n in nodes if n.op_type == "Softmax"], ATTENTION_RULES),
        (
            "gelu",
            [n for n in nodes if n.op_type == "Erf"],
            pattern.RewriteRuleSet([*erfgelu.rules.rules, *gelu.erf_rules.rules]),
        ),
        ("gelu", gelu_tanh_nodes(model), gelu.rules),
    ]


def why_not(model: ir.Model, debug: bool) -> tuple[list[dict[str, str]], str]:
    """For every block left unfused, the closest rule of its kind and why it failed there; with
    ``debug``, also the matcher's own report of its best match per kind."""
    leftovers, text = [], ""
    for kind, nodes, rules in _blocks(model):
        if not nodes:
            continue
        tracer, report = _trace(model, kind, rules)
        text += f"[{kind}] {report}"
        for node in nodes:
            attempt = closest_attempt(tracer, node)
            if kind == "attention" and is_banded(node):
                reason = BANDED
            elif attempt is None:
                reason = f"no {kind} rule matches any part of this {node.op_type}: {input_chain(node)}"
            else:
                reason = _describe(kind, attempt, node)
            leftovers.append({"kind": kind, "node": node.name or node.op_type, "reason": reason})
    for node in model.graph.all_nodes():
        if node.op_type == "ReduceMean":
            leftovers.append(
                {
                    "kind": "layer_norm",
                    "node": node.name or "ReduceMean",
                    "reason": "a decomposed layer norm (ReduceMean) is left",
                }
            )
    return leftovers, text if debug else ""

"""Root-filtered rule sets (passes.root_filtered): a rule no longer sets up a match on a node whose op
type its pattern cannot end in, and the fused graphs stay node-for-node what they were."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest
from onnxscript import rewriter
from onnxscript.rewriter._matcher import SimplePatternMatcher

from edgeformer.config import load_card
from edgeformer.export.source import source_from_card
from edgeformer.export.trace import trace
from edgeformer.fusions import passes
from edgeformer.fusions.pipeline import fuse_model
from tests.fusions.helpers import op_types

FORMS = {"gpt-mini": ("contrib", "none", "nnapi"), "bert-mini": ("standard", "contrib", "coreml")}


@pytest.fixture(scope="module")
def traced() -> dict[str, bytes]:
    """gpt-mini's decoder (with its cache) at opset 18 and bert-mini's encoder at opset 23, traced
    once, unfused (two traces keep the test cheap)."""
    graphs = {}
    for card, opset in (("gpt-mini", 18), ("bert-mini", 23)):
        plan = source_from_card(load_card(f"models/{card}.toml"), memory_check=False).plans[0]
        graphs[card] = ir.serde.serialize_model(trace(plan, opset, optimize=False)).SerializeToString()
    return graphs


def _fused(traced: dict[str, bytes], key: str, form: str) -> tuple[list[str], list[tuple[str, int, int]]]:
    model = ir.serde.deserialize_model(onnx.load_from_string(traced[key]))
    report = fuse_model(model, form)
    return op_types(model), [(p.name, p.rewrites, p.nodes) for p in report.passes]


@pytest.mark.parametrize("card", ["bert-mini", "gpt-mini"])
def test_fused_graphs_are_node_for_node_the_unfiltered_ones(
    traced: dict[str, bytes], card: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = {form: _fused(traced, card, form) for form in FORMS[card]}
    monkeypatch.setattr(passes._RootFiltered, "try_rewrite", lambda self, *a, **k: self._rule.try_rewrite(*a, **k))
    for form in FORMS[card]:
        slow = _fused(traced, card, form)
        assert fast[form][0] == slow[0], form  # op types, in order
        assert fast[form][1] == slow[1], form  # every pass: its rewrites and the nodes after it
    assert {"Attention", "MultiHeadAttention"} & set(fast["contrib"][0])  # the contrib form did fuse attention


def test_the_optimizer_matches_only_nodes_a_rule_can_end_in(
    traced: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxscript's optimizer tried each of its ~46 default rules on every node (200,000 match set-ups
    on BERT-base per export); filtered, a rule meets only the nodes of its pattern's last op type."""
    calls = []
    real = SimplePatternMatcher.match
    monkeypatch.setattr(SimplePatternMatcher, "match", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    model = ir.serde.deserialize_model(onnx.load_from_string(traced["gpt-mini"]))
    nodes = passes.node_count(model)
    passes.cleanup(model)  # the fuse stage's first pass: onnxscript's optimizer twice
    rules = len(rewriter._DEFAULT_REWRITE_RULES)
    assert rules > 40
    # unfiltered, each optimize matched every rule on every node at least once: over nodes * rules
    assert len(calls) < nodes * rules / 10, (len(calls), nodes, rules)
    assert len(calls) > 0  # the rules still run where they can match

"""Fusion passes are checked at the longest length a bundle claims, so a rewrite that only breaks
long sequences is undone at that pass (issue #19: demo-decoder portable-fp32 failed at batch 2,
sequence 128 after passing the per-pass checks at sequence 7)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from torch import nn

from edgeformer.export.graphs import (
    PER_PASS_LONGEST,
    GraphPlan,
    card_cases,
    fusion_check_cases,
    make_inputs,
    run_torch,
)
from edgeformer.export.source import source_from_card
from edgeformer.export.trace import trace
from edgeformer.fusions import mask_bias
from edgeformer.fusions.stage import fuse_graph
from edgeformer.zoo import resolve_card
from tests.conftest import card_config
from tests.fusions.helpers import run

LONG = {"batch": 2, "sequence": 128, "past_sequence": 0}  # demo-decoder's longest checked shape


@pytest.fixture(scope="module")
def demo_decoder():
    """The trained demo decoder traced at opset 23 (its scores reach a few hundred, as trained weights' do)."""
    source = source_from_card(resolve_card("demo-decoder"))
    plan = source.plans[0]
    return plan, ir.to_proto(trace(plan, 23))


def _worst(plan: GraphPlan, model: ir.Model, dims: dict[str, int]) -> float:
    feeds = make_inputs(plan, dims, seed=7)
    want = run_torch(plan, feeds)
    got = dict(zip([o.name for o in model.graph.outputs], run(model, feeds), strict=True))
    return max(float(np.abs(want[k] - got[k]).max()) / max(1.0, float(np.abs(want[k]).max())) for k in want)


def test_portable_demo_decoder_matches_torch_at_its_longest_length(demo_decoder):
    plan, proto = demo_decoder
    model = ir.from_proto(proto)
    report = fuse_graph(model, plan, "standard", lambda _m: None)
    assert report["coverage"]["attention"] == {"blocks": 4, "fused": 4} and not report["rolled_back"]
    assert _worst(plan, model, LONG) < 1e-4  # was 0.12 of the logits' scale (fully masked rows leaked scores)


def test_a_pass_that_breaks_only_long_sequences_is_undone_at_that_pass(demo_decoder, monkeypatch):
    """The old mask fill (-1e9) is exact at sequence 7 and wrong at 128: the per-pass check sees it."""
    plan, proto = demo_decoder
    assert _worst(plan, ir.from_proto(proto), {"batch": 2, "sequence": 7, "past_sequence": 0}) < 1e-4
    monkeypatch.setattr(mask_bias, "FINITE_FILL", -1e9)
    model = ir.from_proto(proto)
    report = fuse_graph(model, plan, "standard", lambda _m: None)
    assert report["rolled_back"]["finite_mask_fill"].startswith("it changed the outputs by"), report["rolled_back"]
    assert _worst(plan, model, LONG) < 1e-4  # the graph that is kept is the one that was checked


def _plan(cfg, graph="model", fixed=False):
    seq = 7 if fixed else "sequence"
    inputs = [type("Spec", (), {"shape": ("batch", seq)})()]
    return GraphPlan(graph, nn.Identity(), inputs, [], card_cases(cfg, graph))


@pytest.mark.parametrize(
    ("card", "graph", "long"),
    [
        ("gpt-mini", "model", {"batch": 2, "sequence": 128, "past_sequence": 0}),
        ("bert-mini", "model", {"batch": 2, "sequence": 128}),
        ("transformer-mini", "encoder", {"batch": 2, "encoder_sequence": 128}),
        ("transformer-mini", "decoder", {"batch": 2, "sequence": 128, "past_sequence": 0, "encoder_sequence": 7}),
    ],
)
def test_every_pass_is_checked_short_long_and_cached(card, graph, long):
    cases = fusion_check_cases(_plan(card_config(card), graph))
    assert cases[0]["batch"] == 2 and cases[0].get("sequence", cases[0].get("encoder_sequence")) == 7
    assert long in cases
    assert any(c.get("past_sequence", 0) > 0 for c in cases) == (graph != "encoder" and card != "bert-mini")


def test_a_long_context_card_is_checked_at_the_cap():
    cases = fusion_check_cases(_plan(card_config("gpt-mini", max_positions=2048)))
    assert {"batch": 2, "sequence": PER_PASS_LONGEST, "past_sequence": 0} in cases
    assert max(c["sequence"] + c.get("past_sequence", 0) for c in cases) <= 2048


def test_a_fixed_shape_graph_is_checked_at_its_one_shape():
    plan = _plan(card_config("bert-mini"), fixed=True)
    plan.cases = [{"batch": 1, "sequence": 1024}]
    assert fusion_check_cases(plan) == [{"batch": 1, "sequence": 1024}]

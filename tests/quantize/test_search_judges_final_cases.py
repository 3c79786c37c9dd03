"""One judgement: the precision search meets the budget on the shapes the final parity check judges.

Before, the search judged pooled held-out rows against the fp32 graph, and the final check judged each
random-input parity shape against torch: a model with an outlier that only shows at long lengths met the
budget in the search (mean cosine 0.996) and then failed the final check at sequence 512 (0.987).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edgeformer.export.source import source_from_card
from edgeformer.parity import BudgetCase
from edgeformer.pipeline import export_bundle
from edgeformer.quantize.mixed import _session, outputs_of
from edgeformer.quantize.stage import BudgetMissError, quantize_bundle
from edgeformer.zoo import resolve_card, resolve_target


def outlier_source():
    """A one-layer encoder of 512 positions whose positions from 256 on carry an outlier channel that a
    FFN unit amplifies (as trained weights' outlier activations do): in dynamic int8 the activation scale
    of the second FFN MatMul then crushes every other token of a batch that reaches those positions."""
    card = resolve_card("bert-mini")
    cfg = card.config.replace(max_positions=512, n_layers=1, d_model=64, n_heads=4, dropout=0.0, attention_dropout=0.0)
    source = source_from_card(dataclasses.replace(card, config=cfg, name="outlier-mini"))
    m, layer = source.model, source.model.encoder.layers[0]
    with torch.no_grad():
        m.embeddings.tokens.weight[:, 5] = 0
        positions = m.embeddings.positions.embedding.weight
        positions[:, 5] = 0
        positions[256:, 5] = 0.3
        layer.ffn.fc2.weight.mul_(10.0)
        layer.self_attn.v_proj.weight[:, 5] = 0
        layer.self_attn.out_proj.weight[5, :] = 0
        layer.ffn.fc1.weight[7, :] = 0
        layer.ffn.fc1.weight[7, 5] = 10.0
    return source


def test_a_search_that_meets_the_budget_is_one_the_final_check_accepts(tmp_path):
    try:
        manifest = export_bundle(outlier_source(), resolve_target("cpu-int8"), tmp_path / "b")
    except BudgetMissError as exc:  # refused before writing, naming the metric, value, budget and what was tried
        assert "cosine" in str(exc) and "< 0.99" in str(exc) and "tried:" in str(exc), str(exc)
        assert not (tmp_path / "b").exists()
        return
    parity = manifest["parity"]
    assert parity["ok"] and len(parity["cases"]) >= 5  # the shapes parity.budget_cases picks (5 since fx)
    worst = min(c["metrics"]["cosine"] for c in parity["cases"])
    assert worst >= 0.99, parity["cases"]
    graph = manifest["quantization"]["graphs"]["model"]
    # the search judged these very shapes: what it reported is what the final check measured
    assert graph["parity_cases"]["shapes"] == len(parity["cases"]) and graph["parity_cases_misses"] == []
    # the outlier breaks int8 until a node is kept in float; what it reads at full width is recorded
    assert graph["kept_in_float"] and graph["float_weight_bytes"] >= 4 * 64 * 64
    assert graph["parity_cases"]["worst"]["cosine"] == pytest.approx(worst, abs=1e-6)
    assert 512 in {c["dims"]["sequence"] for c in parity["cases"]}


def test_a_miss_on_a_final_check_shape_refuses_before_writing(tmp_path, edge_bundle):
    """Cases whose reference the graph cannot meet (the float outputs negated): no graph the search
    tries meets them, so the verdict is a miss naming the shape, and nothing is written."""
    float_graph = _session(edge_bundle("bert-mini") / "model.onnx")
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(0, 1024, (1, 7)), "attention_mask": np.ones((1, 7), np.int64)}
    want = {k: -v for k, v in outputs_of(float_graph, [inputs])[0].items()}
    case = BudgetCase("model", {"batch": 1, "sequence": 7, "total_sequence": 7}, inputs, want)
    with pytest.raises(BudgetMissError) as caught:
        quantize_bundle(edge_bundle("bert-mini"), tmp_path / "q", samples=8, cases={"model": [case]})
    message = str(caught.value)
    assert "model cosine -1" in message and "< 0.99 at batch 1, sequence 7 (random inputs" in message, message
    assert (
        "tried: model: all 8 quantizable node(s) in reduced precision; then up to all of them kept in float" in message
    )
    assert not (tmp_path / "q").exists()

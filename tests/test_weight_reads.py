"""export/weight_reads.py: the bytes of weights one call of a graph reads, the benchmark's divisor
for weight-reading bandwidth, written into every graph's manifest entry."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest

from edgeformer.export.source import source_from_card
from edgeformer.export.weight_reads import weights_read_bytes
from edgeformer.nn import build_model
from edgeformer.pipeline import export_bundle
from edgeformer.zoo import resolve_card, resolve_target


def test_tables_read_by_gather_count_as_rows_and_widened_weights_at_their_float_width():
    ids = ir.Value(name="ids", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([1, 3]))
    graph = ir.Graph([ids], [], nodes=[], opset_imports={"": 21})
    model = ir.Model(graph, ir_version=10)
    arrays = {
        "table": np.zeros((100, 8), np.float32),  # gathered from only: rows, counted 0
        "tied": np.zeros((50, 8), np.float32),  # gathered from and multiplied: read in full
        "w": np.zeros((8, 8), np.float32),
        "half": np.zeros((8, 8), np.float16),  # stored as float16, widened to float32 at load
        "unused": np.zeros((64, 64), np.float32),
        "w4": np.zeros((8, 8), np.float32),
    }
    values = {}
    for name, array in arrays.items():
        values[name] = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        graph.register_initializer(values[name])
    rows = ir.node("Gather", [values["table"], ids], outputs=[ir.Value(name="rows")])
    rows_tied = ir.node("Gather", [values["tied"], ids], outputs=[ir.Value(name="rows_tied")])
    x = ir.node("Add", [rows.outputs[0], rows_tied.outputs[0]], outputs=[ir.Value(name="x")])
    widen = ir.node("Cast", [values["half"]], attributes={"to": ir.DataType.FLOAT}, outputs=[ir.Value(name="h")])
    y = ir.node("MatMul", [x.outputs[0], values["w"]], outputs=[ir.Value(name="y")])
    z = ir.node("MatMul", [y.outputs[0], widen.outputs[0]], outputs=[ir.Value(name="z")])
    head_t = ir.node("Transpose", [values["tied"]], attributes={"perm": [1, 0]}, outputs=[ir.Value(name="tied_t")])
    logits = ir.node("MatMul", [z.outputs[0], head_t.outputs[0]], outputs=[ir.Value(name="logits")])
    graph.extend([rows, rows_tied, x, widen, y, z, head_t, logits])
    graph.outputs.append(logits.outputs[0])
    assert weights_read_bytes(model) == (50 * 8 + 8 * 8 + 8 * 8) * 4

    graph.outputs.append(values["w4"])  # returned as it is: read once
    assert weights_read_bytes(model) == (50 * 8 + 8 * 8 + 8 * 8 + 8 * 8) * 4


def test_four_bit_weights_count_half_a_byte():
    w = ir.Value(name="w", const_value=ir.tensor(np.zeros((16, 8), np.int8), dtype=ir.DataType.INT4, name="w"))
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2, 16]))
    scale = ir.Value(name="scale", const_value=ir.tensor(np.float32(0.5), name="scale"))
    dq = ir.node("DequantizeLinear", [w, scale], outputs=[ir.Value(name="wf")])
    mm = ir.node("MatMul", [x, dq.outputs[0]], outputs=[ir.Value(name="y")])
    graph = ir.Graph([x], [mm.outputs[0]], nodes=[dq, mm], opset_imports={"": 21})
    graph.register_initializer(w)
    graph.register_initializer(scale)
    assert weights_read_bytes(ir.Model(graph, ir_version=10)) == 16 * 8 // 2 + 4


@pytest.mark.parametrize("card_name", ["gpt-mini", "transformer-mini"])
def test_every_written_graph_records_its_weights_read(tmp_path, card_name):
    card = resolve_card(card_name)
    manifest = export_bundle(source_from_card(card), resolve_target("cpu-fp32"), tmp_path / "b", check=False)
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert on_disk["graphs"] == manifest["graphs"]
    cfg = card.config
    model = build_model(cfg)
    params = {name: p.numel() for name, p in model.named_parameters()}
    for graph in on_disk["graphs"].values():
        read = graph["weights_read_bytes"]
        assert 0 < read < (tmp_path / "b" / graph["file"]).stat().st_size
    if card_name == "gpt-mini":  # one graph: every parameter but the position table, which is gathered from
        positions = sum(n for name, n in params.items() if "positions" in name)
        expected = 4 * (sum(params.values()) - positions)
        # (within 1%: the fused graph adds constants of its own, e.g. packed q,k,v biases)
        assert on_disk["graphs"]["model"]["weights_read_bytes"] == pytest.approx(expected, rel=0.01)

"""A tied LM head: untied exactly, quantized as one int8 table that the embedding reads too."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeformer.quantize import int8, tied_head

V, C = 50, 16


def _tied_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((V, C)).astype(np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed", axis=0),
        helper.make_node("Add", ["emb", "x"], ["h"], name="add"),
        helper.make_node("Transpose", ["table"], ["table_t"], name="tr", perm=[1, 0]),
        helper.make_node("MatMul", ["h", "table_t"], ["logits"], name="head"),
    ]
    g = helper.make_graph(
        nodes,
        "tied",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", C]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", V]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["B", "T", C]),
        ],
        [table],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto | str, feeds):
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


FEEDS = {
    "ids": np.array([[0, 3, 49, 7], [1, 1, 2, 48]], dtype=np.int64),
    "x": np.random.default_rng(1).standard_normal((2, 4, C)).astype(np.float32),
}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_untie_stores_the_table_once_transposed_with_equal_outputs():
    model = _tied_model()
    untied, heads = tied_head.untie(model)
    assert [h.table for h in heads] == ["table.T"] and len(heads[0].gathers) == 1
    inits = _inits(untied)
    assert list(inits) == ["table.T"] and inits["table.T"].shape == (C, V)
    assert "Transpose" not in {n.op_type for n in untied.graph.node if n.input[0] == "table.T"}
    for got, want in zip(_run(untied, FEEDS), _run(model, FEEDS), strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_quantized_head_and_the_embedding_share_one_int8_table(tmp_path):
    untied, heads = tied_head.untie(int8.name_nodes(_tied_model()))
    out = tmp_path / "q.onnx"
    int8.quantize_dynamic(untied, out, exclude=list(heads[0].gathers), reduce_range=False)
    assert tied_head.share_quantized(out, heads) == 1
    q = onnx.load(str(out))
    inits = _inits(q)
    tables = {n: a for n, a in inits.items() if a.size == V * C}
    rows = "table.T_quantized_rows"
    assert list(tables) == [rows] and tables[rows].dtype == np.int8 and tables[rows].shape == (V, C)  # one table
    ops = {n.op_type for n in q.graph.node}
    assert "MatMulInteger" in ops
    assert all(a.i == 0 for n in q.graph.node if n.op_type == "Gather" for a in n.attribute if a.name == "axis")
    logits, h = _run(str(out), FEEDS)
    # the embedding rows are exactly the head's int8 rows times their per-channel scales
    table, scale = inits[rows].astype(np.float32), inits["table.T_scale"]
    want = (table[FEEDS["ids"]] * scale[FEEDS["ids"]][..., None]) + FEEDS["x"]
    np.testing.assert_allclose(h, want, rtol=0, atol=1e-6)
    # onnxruntime folds the head's Transpose of the rows and still fuses the int8 product
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    loaded = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "DynamicQuantizeMatMul" in loaded and "Transpose" not in loaded and "MatMulInteger" not in loaded, loaded
    ref_logits, ref_h = _run(_tied_model(), FEEDS)
    cos = (logits * ref_logits).sum(-1) / np.linalg.norm(logits, axis=-1) / np.linalg.norm(ref_logits, axis=-1)
    assert cos.min() > 0.98 and np.abs(h - ref_h).max() < 0.05  # 16 channels: coarse activation steps


def test_a_head_kept_in_float_shares_the_float_rows(tmp_path):
    untied, heads = tied_head.untie(int8.name_nodes(_tied_model()))
    out = tmp_path / "q.onnx"
    int8.quantize_dynamic(untied, out, exclude=["head", *heads[0].gathers])
    assert tied_head.share_quantized(out, heads) == 0  # no Gather reads int8
    q = onnx.load(str(out))
    assert [(n, a.shape) for n, a in _inits(q).items() if a.size == V * C] == [("table.T_rows", (V, C))]
    assert all(a.i == 0 for n in q.graph.node if n.op_type == "Gather" for a in n.attribute if a.name == "axis")
    for got, want in zip(_run(str(out), FEEDS), _run(_tied_model(), FEEDS), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_table_used_otherwise_is_left_alone():
    model = _tied_model()
    model.graph.node.append(helper.make_node("ReduceSum", ["table"], ["total"], name="sum", keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("total", TensorProto.FLOAT, []))
    untied, heads = tied_head.untie(model)
    assert heads == [] and untied is model

"""Weights left in float by int8 mixed precision: float16 on disk, fp32 arithmetic after load."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeformer.quantize import half_storage

K, N, V = 64, 128, 100


def _model(big: float = 1.0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((K, N)).astype(np.float32)
    table = (rng.standard_normal((V, K)) * big).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "weight"], ["y"], name="proj"),
        helper.make_node("Add", ["y", "bias"], ["out"], name="bias_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "T", N])],
        [numpy_helper.from_array(a, n) for a, n in ((weight, "weight"), (table, "table"), (bias, "bias"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(path, optimized=None):
    opts = ort.SessionOptions()
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": np.array([[1, 5, 99, 0]], dtype=np.int64)})[0]


def test_large_float_weights_are_stored_half_and_folded_back_to_fp32_at_load(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    want, before = _run(path), path.stat().st_size
    assert half_storage.store_half(path, min_elements=1000) == 2  # the weight and the table, not the bias
    inits = {t.name: t.data_type for t in onnx.load(path).graph.initializer}
    assert inits == {"weight_fp16": TensorProto.FLOAT16, "table_fp16": TensorProto.FLOAT16, "bias": TensorProto.FLOAT}
    assert path.stat().st_size < 0.6 * before
    got = _run(path, optimized=tmp_path / "loaded.onnx")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * np.abs(want).max())  # fp16 rounding of the weights
    assert not np.array_equal(got, want)
    loaded = onnx.load(tmp_path / "loaded.onnx")  # what onnxruntime runs: the Casts folded into fp32 constants
    assert "Cast" not in {n.op_type for n in loaded.graph.node}
    assert {t.name: t.data_type for t in loaded.graph.initializer}.get("weight") == TensorProto.FLOAT


def test_small_vectors_and_values_beyond_float16_stay_fp32(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(big=1e6), path)  # the table holds values float16 cannot
    assert half_storage.store_half(path) == 1  # the weight (8192 elements); the table is out of range
    inits = {t.name for t in onnx.load(path).graph.initializer}
    assert inits == {"weight_fp16", "table", "bias"}
    path2 = tmp_path / "small.onnx"
    onnx.save(_model(), path2)
    assert half_storage.store_half(path2, min_elements=10**6) == 0  # nothing large enough: file untouched
    assert onnx.load(path2) == _model()

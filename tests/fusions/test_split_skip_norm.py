"""SkipLayerNormalization -> Add, Add(bias), LayerNormalization for onnxruntime's CPU kernels: same
numbers, and onnxruntime does not fuse the split form back when it creates a session."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeformer.export.graphs import make_inputs
from edgeformer.export.source import source_from_card
from edgeformer.export.trace import trace
from edgeformer.fusions.pipeline import fuse_model
from edgeformer.fusions.split_skip_norm import split_skip_layer_norm
from edgeformer.zoo import resolve_card
from tests.fusions.helpers import graph, op_types, run

H = 16


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _param(name, seed):
    return onnx.numpy_helper.from_array(np.random.default_rng(seed).standard_normal(H).astype(np.float32), name)


def _skip_norm_model(*, bias: bool, sum_out: bool, mean_out: bool = False, opset: int = 18) -> ir.Model:
    inputs = ["x", "skip", "gamma", "beta"] + (["bias"] if bias else [])
    outputs = ["y", "mean" if mean_out else "", "", "sum" if sum_out else ""]
    while outputs[-1] == "":
        outputs.pop()
    node = helper.make_node("SkipLayerNormalization", inputs, outputs, domain="com.microsoft", epsilon=1e-5, name="sln")
    nodes = [node, helper.make_node("Relu", ["y"], ["z"])]
    graph_outputs = [_tensor("z", ["batch", "sequence", H])]
    if sum_out:  # the residual stream goes on (pre-LN): the sum is used, and is also a graph output
        nodes.append(helper.make_node("Mul", ["sum", "y"], ["next"]))
        graph_outputs += [_tensor("sum", ["batch", "sequence", H]), _tensor("next", ["batch", "sequence", H])]
    if mean_out:
        graph_outputs.append(_tensor("mean", None))
    inits = [_param("gamma", 1), _param("beta", 2)] + ([_param("bias", 3)] if bias else [])
    return graph(
        nodes, [_tensor("x", ["batch", "sequence", H]), _tensor("skip", ["batch", "sequence", H])], graph_outputs,
        inits, opset=opset,
    )  # fmt: skip


def _feeds():
    rng = np.random.default_rng(0)
    x, skip = rng.standard_normal((2, 2, 5, H)).astype(np.float32)
    return {"x": x, "skip": skip}


def _session_ops(model: ir.Model, tmp_path) -> Counter:
    """The op types onnxruntime runs after its own graph optimizations at session creation."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(ir.to_proto(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


@pytest.mark.parametrize(("bias", "sum_out"), [(True, False), (False, False), (True, True), (False, True)])
def test_split_keeps_the_numbers_and_onnxruntime_keeps_the_split(bias, sum_out, tmp_path):
    model = _skip_norm_model(bias=bias, sum_out=sum_out)
    want = run(model, _feeds())
    assert split_skip_layer_norm(model) == 1
    ops = Counter(op_types(model))
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 1 and ops["Add"] == 2
    assert [v.name for v in model.graph.outputs] == (["z", "sum", "next"] if sum_out else ["z"])
    got = run(model, _feeds())
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    session_ops = _session_ops(model, tmp_path)
    assert session_ops["SkipLayerNormalization"] == 0 and session_ops["LayerNormalization"] == 1, session_ops


def test_without_the_bias_add_last_onnxruntime_fuses_it_back(tmp_path):
    """Why the split form ends with the bias Add: Add -> LayerNormalization is fused at load."""
    nodes = [
        helper.make_node("Add", ["x", "skip"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["z"], axis=-1, epsilon=1e-5),
    ]
    x = [_tensor("x", ["batch", "sequence", H]), _tensor("skip", ["batch", "sequence", H])]
    model = graph(nodes, x, [_tensor("z", ["batch", "sequence", H])], [_param("gamma", 1), _param("beta", 2)])
    assert _session_ops(model, tmp_path)["SkipLayerNormalization"] == 1


def test_left_alone_when_the_mean_is_used_or_there_is_no_layer_norm_op():
    assert split_skip_layer_norm(_skip_norm_model(bias=True, sum_out=False, mean_out=True)) == 0
    assert split_skip_layer_norm(_skip_norm_model(bias=True, sum_out=False, opset=16)) == 0


@pytest.mark.parametrize("card", ["bert-mini", "gpt-mini"])
def test_pipeline_splits_for_cpu_and_keeps_the_fused_op_for_cuda(card):
    plan = source_from_card(resolve_card(card)).plans[0]
    feeds = [make_inputs(plan, {"batch": 2, "sequence": 5, "past_sequence": 3}, seed=1)]
    cpu, gpu = trace(plan, 18), trace(plan, 18)
    cpu_report = fuse_model(cpu, "contrib", feeds=feeds, providers=("cpu",))
    gpu_report = fuse_model(gpu, "contrib", feeds=feeds, providers=("cuda", "cpu"))
    cpu_ops, gpu_ops = Counter(op_types(cpu)), Counter(op_types(gpu))
    norms = gpu_ops["SkipLayerNormalization"]
    assert norms > 0 and cpu_report.counts["split_skip_layer_norm"] == norms
    assert cpu_ops["SkipLayerNormalization"] == 0
    assert cpu_ops["LayerNormalization"] == gpu_ops["LayerNormalization"] + norms
    assert "split_skip_layer_norm" not in gpu_report.counts
    for report in (cpu_report, gpu_report):
        assert report.complete and report.coverage["layer_norm"]["fused"] == report.coverage["layer_norm"]["blocks"]
        assert all(p.max_rel_error is None or p.max_rel_error <= 1e-4 for p in report.passes)
    np.testing.assert_allclose(run(cpu, feeds[0])[0], run(gpu, feeds[0])[0], rtol=1e-4, atol=1e-4)


def test_fuse_command_takes_the_providers(tmp_path):
    from click.testing import CliRunner

    from edgeformer.cli import main
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    plain = tmp_path / "plain"
    export_bundle(source_from_card(resolve_card("bert-mini")), resolve_target("unfused-fp32"), plain, check=False)
    runner = CliRunner()
    for providers, skip_norms in (("cuda,cpu", True), ("cpu", False)):
        out = tmp_path / f"{providers}.onnx"
        result = runner.invoke(main, ["fuse", str(plain / "model.onnx"), "-o", str(out), "--providers", providers])
        assert result.exit_code == 0, result.output
        ops = Counter(op_types(ir.load(out)))
        assert ops["SkipLayerNormalization" if skip_norms else "LayerNormalization"] == 5  # 2 layers x 2 + embedding
        assert ops["LayerNormalization" if skip_norms else "SkipLayerNormalization"] == 0
    result = runner.invoke(main, ["fuse", str(plain), "-o", str(tmp_path / "gpu"), "--providers", "cuda,cpu"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "gpu" / "manifest.json").read_text())
    assert manifest["target"]["providers"] == ["cuda", "cpu"]
    assert manifest["fusions"]["model"]["counts"]["skip_layer_norm"] == 5
    assert "split_skip_layer_norm" not in manifest["fusions"]["model"]["counts"]
    result = runner.invoke(main, ["fuse", str(plain / "model.onnx"), "--providers", "gpu"])
    assert result.exit_code == 2 and "unknown gpu" in result.output and "cuda" in result.output

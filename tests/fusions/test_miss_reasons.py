"""An attention block left unfused is explained by the attention rules, per block, never by a
GELU rule that happens to be in the same graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from click.testing import CliRunner
from onnx import TensorProto, helper

from edgeformer.cli import main
from edgeformer.fusions.pipeline import fuse_model
from tests.fusions.helpers import graph, scalar


def _attention_with_a_scale_input_and_a_tanh_gelu():
    """softmax(q k^T * s) v with the scale s a graph input (no rule can fuse that), beside a
    tanh-approximated GELU, whose rules (TanhGelu_*) once gave the attention block its reason."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "s"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["attn"]),
        helper.make_node("Pow", ["attn", "three"], ["cube"]),  # 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
        helper.make_node("Mul", ["cube", "c1"], ["cube_c"]),
        helper.make_node("Add", ["attn", "cube_c"], ["inner"]),
        helper.make_node("Mul", ["inner", "c2"], ["inner_c"]),
        helper.make_node("Tanh", ["inner_c"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["t1"]),
        helper.make_node("Mul", ["attn", "t1"], ["xt"]),
        helper.make_node("Mul", ["xt", "half"], ["y"]),
    ]
    shape = [1, 2, 5, 4]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, []))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    consts = [
        scalar("three", 3.0),
        scalar("c1", 0.044715),
        scalar("c2", float(np.sqrt(2 / np.pi))),
        scalar("one", 1.0),
        scalar("half", 0.5),
    ]
    return graph(nodes, inputs, outputs, consts)


def _feeds():
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((1, 2, 5, 4)).astype(np.float32) for n in ("q", "k", "v")}
    return {**feeds, "s": np.array(0.5, dtype=np.float32)}


def test_an_unfused_attention_block_names_the_attention_rule_and_its_failed_check():
    model = _attention_with_a_scale_input_and_a_tanh_gelu()
    report = fuse_model(model, "contrib", feeds=[_feeds()], debug=True)
    attention = [m for m in report.not_fused if m["kind"] == "attention"]
    assert len(attention) == 1 and report.coverage["attention"] == {"blocks": 1, "fused": 0}
    reason = attention[0]["reason"]
    assert reason.startswith("attention rule SDPA, check failed:"), reason
    assert "qk_scale is not a scalar" in reason and "Gelu" not in reason


def test_fuse_debug_on_a_file_says_which_attention_rule_stopped(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(ir.to_proto(_attention_with_a_scale_input_and_a_tanh_gelu()), src)
    result = CliRunner().invoke(main, ["fuse", str(src), "-o", str(tmp_path / "f.onnx"), "--debug"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "NOT FUSED attention" in x)
    assert "attention rule SDPA, check failed: qk_scale is not a scalar" in line, result.output
    assert "[attention] Rule: SDPA" in result.output  # the matcher's own account, with --debug

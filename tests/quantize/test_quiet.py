"""Static quantization is quiet: onnxruntime's calibrator prints a few lines per call (about 100 over a
mixed-precision search) onto stdout, where the report and --json go; --verbose shows them, on stderr."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeformer.quantize import int8


def _matmul_model():
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


FEEDS = [{"x": np.random.default_rng(i).standard_normal((2, 16)).astype(np.float32)} for i in range(4)]


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_static_quantization_prints_nothing(tmp_path, capfd, method):
    int8.quantize_static(_matmul_model(), tmp_path / "q.onnx", FEEDS, method=method)
    out, err = capfd.readouterr()
    assert out == "" and "Number of tensors" not in err and "histogram" not in err
    assert (tmp_path / "q.onnx").is_file()


def test_verbose_shows_the_calibrator_on_stderr(tmp_path, capfd):
    token = int8.VERBOSE.set(True)
    try:
        int8.quantize_static(_matmul_model(), tmp_path / "q.onnx", FEEDS, method="percentile")
    finally:
        int8.VERBOSE.reset(token)
    out, err = capfd.readouterr()
    assert out == "" and "Number of tensors" in err

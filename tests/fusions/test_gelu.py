from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from edgeformer.fusions import gelu
from tests.fusions.helpers import graph, op_types, run, scalar


def _times_half(arrangement: str, half_first: bool) -> list:
    """y = x * one_plus * half in the arrangement's order (half_last: half as the first operand
    when ``half_first``)."""
    n = helper.make_node
    if arrangement == "half_x_first":
        return [n("Mul", ["x", "half"], ["hx"]), n("Mul", ["hx", "one_plus"], ["y"])]
    if arrangement == "half_inside":
        return [n("Mul", ["one_plus", "half"], ["h"]), n("Mul", ["x", "h"], ["y"])]
    # half_last, torch.onnx's TorchScript exporter's: (x * (erf + 1)) * 0.5
    return [n("Mul", ["x", "one_plus"], ["xo"]), n("Mul", ["half", "xo"] if half_first else ["xo", "half"], ["y"])]


def _tanh_gelu(arrangement: str, swap: bool):
    n = helper.make_node
    nodes = [
        n("Pow", ["x", "three"], ["cube"]),
        n("Mul", ["cube", "k"] if not swap else ["k", "cube"], ["kcube"]),
        n("Add", ["x", "kcube"], ["inner"]),
        n("Mul", ["inner", "c"], ["scaled"]),
        n("Tanh", ["scaled"], ["t"]),
        n("Add", ["t", "one"] if not swap else ["one", "t"], ["one_plus"]),
    ]
    nodes += _times_half(arrangement, half_first=False)
    consts = [
        scalar("three", 3.0),
        scalar("k", 0.044715),
        scalar("c", math.sqrt(2 / math.pi)),
        scalar("one", 1.0),
        scalar("half", 0.5),
    ]
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 8]) for v in ("x", "y")]
    return graph(nodes, io[:1], io[1:], consts)


@pytest.mark.parametrize("arrangement", list(gelu.ARRANGEMENTS))
@pytest.mark.parametrize("swap", [False, True])
def test_every_arrangement_becomes_fast_gelu(arrangement, swap):
    model = _tanh_gelu(arrangement, swap)
    x = np.linspace(-4, 4, 16, dtype=np.float32).reshape(2, 8)
    before = run(model, {"x": x})[0]
    assert gelu.rules.apply_to_model(model) == 1
    assert op_types(model) == ["FastGelu"]
    np.testing.assert_allclose(run(model, {"x": x})[0], before, atol=1e-5)


def test_wrong_constant_is_not_gelu():
    model = _tanh_gelu("half_x_first", False)
    model.graph.initializers["k"].const_value = ir.tensor(np.array(0.05, dtype=np.float32), name="k")
    assert gelu.rules.apply_to_model(model) == 0
    assert "Tanh" in op_types(model)


def _erf_gelu(arrangement: str, swap: bool, scaling: str, root2: float | None = None):
    n = helper.make_node
    nodes = [
        n(scaling, ["x", "root2"], ["scaled"]),
        n("Erf", ["scaled"], ["e"]),
        n("Add", ["e", "one"] if not swap else ["one", "e"], ["one_plus"]),
    ]
    nodes += _times_half(arrangement, half_first=swap)
    if root2 is None:
        root2 = math.sqrt(2.0) if scaling == "Div" else 1 / math.sqrt(2.0)
    consts = [scalar("root2", root2), scalar("one", 1.0), scalar("half", 0.5)]
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 8]) for v in ("x", "y")]
    return graph(nodes, io[:1], io[1:], consts)


@pytest.mark.parametrize("arrangement", list(gelu.ARRANGEMENTS))
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("scaling", ["Div", "Mul"])
def test_every_erf_arrangement_becomes_gelu(arrangement, swap, scaling):
    model = _erf_gelu(arrangement, swap, scaling)
    x = np.linspace(-4, 4, 16, dtype=np.float32).reshape(2, 8)
    before = run(model, {"x": x})[0]
    assert gelu.erf_rules.apply_to_model(model) == 1
    assert op_types(model) == ["Gelu"]
    np.testing.assert_allclose(run(model, {"x": x})[0], before, atol=1e-6)


def test_erf_of_another_scale_is_not_gelu():
    model = _erf_gelu("half_last", False, "Div", root2=2.0)
    assert gelu.erf_rules.apply_to_model(model) == 0
    assert "Erf" in op_types(model)

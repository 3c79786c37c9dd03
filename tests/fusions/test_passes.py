"""The pass contract: every pass says truthfully whether it changed the graph, what it needs is
data, and the pass tables cover exactly the fusion forms the cards accept."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions import tables
from edgeformer.fusions.passes import NEEDS, FusionOptions, FusionPass, FusionResult, common_subexpressions
from edgeformer.targets import FUSION_FORMS
from tests.fusions.helpers import graph, op_types, run


def _duplicated() -> object:
    """Two identical Add(x, c) nodes feeding one Mul: CSE merges them into one."""
    c = numpy_helper.from_array(np.float32(2.0).reshape(()), "c")
    nodes = [
        helper.make_node("Add", ["x", "c"], ["a"]),
        helper.make_node("Add", ["x", "c"], ["b"]),
        helper.make_node("Mul", ["a", "b"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    return graph(nodes, [x], [y], [c])


def test_a_pass_that_merges_nodes_says_it_changed_the_graph_so_it_is_checked() -> None:
    # The old _cse always reported 0: the share_mask_bias pass was never checked on its own.
    model = _duplicated()
    feeds = {"x": np.arange(3, dtype=np.float32)}
    before = run(model, feeds)[0]
    result = FusionPass("share", common_subexpressions, count="nodes")(model)
    assert isinstance(result, FusionResult) and result.modified and result.rewrites == 1
    assert op_types(model) == ["Add", "Mul"]
    np.testing.assert_array_equal(run(model, feeds)[0], before)
    again = FusionPass("share", common_subexpressions, count="nodes")(model)
    assert not again.modified and again.rewrites == 0


def test_needs_are_data_and_select_the_passes() -> None:
    names = [p.name for p in tables.passes_for("contrib", FusionOptions())]
    assert "attention" in names and "split_skip_layer_norm" in names
    int8 = [p.name for p in tables.passes_for("contrib", FusionOptions(packed_attention=False))]
    assert "attention" not in int8 and len(int8) == len(names) - 1
    gpu = [p.name for p in tables.passes_for("contrib", FusionOptions(providers=("cuda", "cpu")))]
    assert "split_skip_layer_norm" not in gpu
    assert all(set(p.needs) <= set(NEEDS) for form in tables.TABLES.values() for p in form)
    with pytest.raises(ValueError, match="unknown needs"):
        FusionPass("x", lambda m: 0, needs=("no_such_need",))
    with pytest.raises(ValueError, match="fusion form 'fancy' is not one of"):
        tables.passes_for("fancy", FusionOptions())


def test_every_form_the_cards_accept_has_a_table_and_every_table_starts_with_cleanup() -> None:
    assert set(tables.TABLES) == set(FUSION_FORMS)
    for form, passes in tables.TABLES.items():
        assert passes[0].name == "cleanup", form
        assert all(isinstance(p, FusionPass) for p in passes)
        assert len({p.name for p in passes}) == len(passes), f"{form}: a pass named twice"


def test_a_pass_that_makes_nan_is_undone_not_passed() -> None:
    # NaN compared with the tolerance is False either way: the check must treat it as a failure.
    from edgeformer.fusions.checks import max_rel

    ref = [[np.ones((2, 3), dtype=np.float32)]]
    bad = [[np.array([[1, np.nan, 1], [1, 1, 1]], dtype=np.float32)]]
    assert max_rel(ref, bad) == float("inf")
    assert max_rel(ref, [[np.full((2, 3), 1.5, dtype=np.float32)]]) == 0.5
    big = [[np.full((2, 3), 10.0, dtype=np.float32)]]
    assert max_rel(big, [[np.full((2, 3), 11.0, dtype=np.float32)]]) == 0.1


def test_the_check_runs_the_weights_from_memory_and_restores_them_shared() -> None:
    from edgeformer.fusions.checks import restore, run, snapshot

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])
    model = graph([helper.make_node("MatMul", ["x", "W"], ["y"])], [x], [y], [w])
    feeds = [{"x": rng.standard_normal((2, 64)).astype(np.float32)}]
    snap = snapshot(model)
    assert not snap.proto.graph.initializer[0].raw_data  # the weights were not copied into the proto
    assert snap.tensors["W"] is model.graph.initializers["W"].const_value
    want = feeds[0]["x"] @ model.graph.initializers["W"].const_value.numpy()
    np.testing.assert_allclose(run(snap, feeds)[0][0], want, rtol=1e-5, atol=1e-5)
    model.graph.initializers["W"].const_value = ir.tensor(np.zeros((64, 64), dtype=np.float32), name="W")
    restore(model, snap)
    np.testing.assert_allclose(run(model, feeds)[0][0], want, rtol=1e-5, atol=1e-5)

"""symbolic_shapes: the TorchScript exporter's Shape/Gather/Concat reshape targets become sizes
read from the graph inputs or constants, identity Reshapes are dropped, and the numbers stay."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgeformer.fusions import symbolic_shapes
from tests.fusions.helpers import graph, op_types, run

D = 8


def _exporter_style() -> ir.Model:
    """x (batch, seq, D) -> MatMul -> h; h reshaped to (b, s, 2, 4) and back to (b, s, D) with
    targets computed from Shape(h) as the TorchScript exporter writes them."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "i0"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "i1"),
        numpy_helper.from_array(np.array(2, dtype=np.int64), "i2"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
        numpy_helper.from_array(np.array([2, 4], dtype=np.int64), "heads"),
        numpy_helper.from_array(np.array([D], dtype=np.int64), "width"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Shape", ["h"], ["hs"]),
        helper.make_node("Gather", ["hs", "i0"], ["b"], axis=0),
        helper.make_node("Gather", ["hs", "i1"], ["s"], axis=0),
        helper.make_node("Gather", ["hs", "i2"], ["d"], axis=0),  # a known size: becomes a constant
        helper.make_node("Unsqueeze", ["b", "axes0"], ["b1"]),
        helper.make_node("Unsqueeze", ["s", "axes0"], ["s1"]),
        helper.make_node("Unsqueeze", ["d", "axes0"], ["d1"]),
        helper.make_node("Concat", ["b1", "s1", "heads"], ["split_shape"], axis=0),
        helper.make_node("Reshape", ["h", "split_shape"], ["split"]),
        helper.make_node("Concat", ["b1", "s1", "d1"], ["same_shape"], axis=0),
        helper.make_node("Reshape", ["h", "same_shape"], ["same"]),  # (b, s, D) -> (b, s, D): dropped
        helper.make_node("Relu", ["same"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D])
    outs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("split", TensorProto.FLOAT, None),
    ]
    return graph(nodes, [x], outs, inits)


def _feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(batch * 10 + seq).standard_normal((batch, seq, D)).astype(np.float32)}


def test_sizes_come_from_the_inputs_identity_reshape_is_dropped_and_numbers_stay() -> None:
    model = _exporter_style()
    shapes = [(1, 1), (2, 5), (3, 17)]
    before = [run(model, _feeds(*s)) for s in shapes]
    assert op_types(model).count("Reshape") == 2
    rewrites = symbolic_shapes.apply(model)
    assert rewrites >= 3  # batch and seq read from x, the known width a constant, one Reshape dropped
    ops = op_types(model)
    assert ops.count("Reshape") == 1
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    assert reshape.outputs[0].shape is not None and list(reshape.outputs[0].shape.dims)[2:] == [2, 4]
    # no size is taken from an intermediate tensor any more: every Shape reads the graph input x
    assert all(n.inputs[0].name == "x" for n in model.graph if n.op_type == "Shape")
    for s, want in zip(shapes, before, strict=True):
        got = run(model, _feeds(*s))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_a_graph_with_nothing_to_rewrite_is_written_as_it_came() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = graph([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    assert symbolic_shapes.apply(model) == 0
    assert op_types(model) == ["Relu"]
    assert model.graph.outputs[0].shape is None  # the inferred shape was taken back


def test_incomplete_inference_keeps_its_shapes_and_writes_nothing_where_the_user_works(tmp_path, monkeypatch) -> None:
    """onnxruntime's public infer_shapes saves sym_shape_infer_temp.onnx into the working directory
    when a shape stays unknown (here: an op it does not know, after the reshapes); its partial shapes
    are still used, and the working directory stays empty. No private API is called."""
    import inspect

    model = _exporter_style()
    nodes = list(model.graph)
    mystery = ir.node("Mystery", [nodes[-1].outputs[0]], domain="edgeformer.test")
    mystery.outputs[0].name = "z"
    model.graph.append(mystery)
    model.graph.outputs.append(mystery.outputs[0])
    model.opset_imports["edgeformer.test"] = 1
    monkeypatch.chdir(tmp_path)
    assert symbolic_shapes.apply(model) >= 3  # the shapes inferred before the unknown op were used
    assert op_types(model).count("Reshape") == 1
    assert list(tmp_path.iterdir()) == []
    source = inspect.getsource(symbolic_shapes)
    assert "_preprocess" not in source and "_infer_impl" not in source and "infer_shapes(" in source


def test_large_initializers_reach_the_inference_as_inputs_without_their_data_being_copied(monkeypatch) -> None:
    """The proto handed to the inference never serialises a large weight (BERT-base: 440 MB copied
    and thrown away per export); the model keeps its tensors."""
    big = numpy_helper.from_array(np.arange(2048, dtype=np.float32).reshape(2, 1024), "big")
    small = numpy_helper.from_array(np.ones(3, dtype=np.float32), "small")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1024])
    model = graph([helper.make_node("MatMul", ["x", "big"], ["y"])], [x], [y], [big, small])
    before = model.graph.initializers["big"].const_value
    written = []
    real = ir.serde.serialize_tensor_into
    monkeypatch.setattr(
        ir.serde, "serialize_tensor_into", lambda proto, from_: written.append(from_.name) or real(proto, from_)
    )
    proto = symbolic_shapes._stripped_proto(model)
    assert written == ["small"]
    assert [i.name for i in proto.graph.initializer] == ["small"]
    assert [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in proto.graph.input[1:]] == [
        ("big", [2, 1024])
    ]
    assert model.graph.initializers["big"].const_value is before  # put back

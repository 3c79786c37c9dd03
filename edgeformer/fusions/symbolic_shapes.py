"""Symbolic shapes, so attention in graphs from torch.onnx's TorchScript exporter can be matched.

That exporter (``torch.onnx.export(..., dynamo=False)``, what optimum writes) computes every
reshape target from ``Shape`` / ``Gather`` / ``Concat`` chains with a ``-1``, and ONNX shape
inference loses track: the heads axis of the query is ``unk__18`` and that of the key
``unk__19``, so no attention pattern can prove they are the same heads. Three steps, in order:

1. onnxruntime's symbolic shape inference (``onnxruntime.tools.symbolic_shape_infer``, what its
   transformer optimizer runs) gives every value a shape in terms of the graph inputs' named
   dimensions (``[batch, 4, sequence, 16]``); run on a copy without the weights' data, through its
   public ``infer_shapes``, in a scratch directory (it saves a partial result into the working one).
2. A ``Gather(Shape(x), i)`` whose dimension is a graph input's named dimension reads it from that
   input instead, and one whose dimension is a number becomes that number: the exporter takes
   sizes from intermediate tensors (the attention output's batch size, the value's head size),
   and that extra use of an intermediate value blocks a fusion of its producer.
3. A ``Reshape`` whose output shape equals its input shape, dimension by dimension, is dropped.

The per-pass parity check runs after this like after any other pass.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.optimizer import fold_constants

from edgeformer.fusions.miss_reasons import Skipped, skip

_WEIGHT_ELEMENTS = 1024  # initializers above this are passed to the inference as inputs of their shape


def _stripped_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto whose large initializers are graph inputs (their shape, no data). Their
    tensors are never serialised (on BERT-base that copy of 440 MB took nearly all of this pass):
    each is taken off its value while the proto is written and put back, the model left as it was."""
    large = {
        value: tensor
        for value in model.graph.initializers.values()
        if (tensor := value.const_value) is not None and tensor.size > _WEIGHT_ELEMENTS
    }
    quiet = _NoDataWarning()
    _SERDE_LOG.addFilter(quiet)  # onnx_ir warns of an initializer without data: here it is the point
    try:
        for value in large:
            value.const_value = None
        proto = ir.to_proto(model)
    finally:
        for value, tensor in large.items():
            value.const_value = tensor
        _SERDE_LOG.removeFilter(quiet)
    for value, tensor in large.items():
        proto.graph.input.append(
            onnx.helper.make_tensor_value_info(str(value.name), tensor.dtype.value, tensor.shape.numpy())
        )
    return proto


_SERDE_LOG = logging.getLogger("onnx_ir.serde")


class _NoDataWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have a constant value set" not in record.getMessage()


_PARTIAL = "sym_shape_infer_temp.onnx"  # where infer_shapes saves what it inferred when some shape stays unknown
_CWD = threading.Lock()  # the working directory is the process's: one inference at a time changes it


def _symbolic_inference(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """onnxruntime's public ``SymbolicShapeInference.infer_shapes`` (int_max, auto_merge, no rank
    guessing). Where some shape stays unknown it saves the partial model as ``sym_shape_infer_temp.onnx``
    in the working directory and raises: it runs in a scratch directory, whose partial model is read
    back (its shapes are kept) and removed, so nothing is written where the user works. None for a
    graph it cannot handle (custom ops it stops at first, unsupported ops, sympy missing)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return None
    with _CWD, tempfile.TemporaryDirectory(prefix="edgeformer-shapes-") as scratch, contextlib.chdir(scratch):
        try:
            return SymbolicShapeInference.infer_shapes(proto, 2**31 - 1, auto_merge=True, guess_output_rank=False)
        except Exception:  # noqa: BLE001 - any failure of the inference: keep ONNX's shapes
            partial = Path(scratch) / _PARTIAL
            return onnx.load(str(partial), load_external_data=False) if partial.is_file() else None


def infer(model: ir.Model) -> dict[ir.Value, ir.Shape | None]:
    """Step 1: put onnxruntime's symbolic shapes on the graph's values; returns the values that
    got a shape with fewer unknown dimensions, with their shapes before. A graph it cannot handle
    is left as it is."""
    inferred = _symbolic_inference(_stripped_proto(model))
    if inferred is None:
        return {}
    shapes = {info.name: info for info in inferred.graph.value_info}
    improved: dict[ir.Value, ir.Shape | None] = {}
    for node in model.graph.all_nodes():
        for value in node.outputs:
            info = shapes.get(value.name)
            if info is None or not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
                continue
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in info.type.tensor_type.shape.dim
            ]
            if value.shape is not None and len(value.shape) != len(dims):
                continue
            if _unknowns(dims) < (len(dims) + 1 if value.shape is None else _unknowns(list(value.shape.dims))):
                improved[value] = value.shape
                value.shape = ir.Shape(dims)
    return improved


def _unknowns(dims: list) -> int:
    return sum(1 for d in dims if d is None or (not isinstance(d, int) and (_name(d) or "unk__").startswith("unk__")))


def _name(dim: object) -> str | None:
    if isinstance(dim, ir.SymbolicDim):
        return dim.value
    return dim if isinstance(dim, str) else None


def _gathered_dim(node: ir.Node) -> tuple[ir.Value, int, int | ir.SymbolicDim] | str | None:
    """For ``Gather(Shape(x), i)``: x, the index's rank and the dimension it reads, or why it cannot
    be rewritten; None for a Gather of anything else (not a candidate)."""
    shape_node = node.inputs[0].producer() if node.inputs[0] is not None else None
    index = node.inputs[1].const_value if node.inputs[1] is not None else None
    if shape_node is None or shape_node.op_type != "Shape":
        return None
    if shape_node.attributes:
        return "its Shape takes a start or end"
    if index is None or index.numpy().size != 1:
        return "its index is not one constant"
    source = shape_node.inputs[0]
    if source is None or source.shape is None:
        return f"{source.name if source is not None else 'its Shape input'} has no known shape"
    axis = int(index.numpy().reshape(()))
    if not -len(source.shape) <= axis < len(source.shape):
        return f"index {axis} is outside {source.name}'s rank {len(source.shape)}"
    return source, index.numpy().ndim, source.shape.dims[axis]


def _constant_size(model: ir.Model, node: ir.Node, size: int, rank: int) -> None:
    value = ir.Value(
        name=_unused_name(model, f"{node.outputs[0].name or 'dim'}.size"),
        const_value=ir.tensor(np.full((1,) * rank, size, dtype=np.int64)),
    )
    model.graph.register_initializer(value)
    node.outputs[0].replace_all_uses_with(value)


def canonical_dims(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Step 2: ``Gather(Shape(x), i)`` of a named input dimension reads it from the input; of a
    known size, is that size. Each other such Gather is recorded in ``skipped`` with the reason."""
    inputs: dict[str, tuple[ir.Value, int]] = {}
    for value in model.graph.inputs:
        for axis, dim in enumerate(value.shape.dims if value.shape is not None else ()):
            name = _name(dim)
            if name and not name.startswith("unk__"):
                inputs.setdefault(name, (value, axis))
    made: dict[tuple[str | None, int, int], ir.Value] = {}  # (graph input, axis, rank) -> its Gather
    rewrites = 0
    for node in list(model.graph):
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        found = _gathered_dim(node)
        if found is None:
            continue
        if isinstance(found, str):
            skip(skipped, node, found)
            continue
        source, rank, gathered = found
        name = _name(gathered)
        if isinstance(gathered, int):  # a size known from the shapes: a constant
            _constant_size(model, node, gathered, rank)
        elif name not in inputs:
            skip(skipped, node, f"dimension {name or '(unnamed)'} of {source.name} is no graph input's dimension")
            continue
        elif inputs[name][0] is source:
            skip(skipped, node, f"it reads graph input {source.name} already")
            continue
        else:
            graph_input, input_axis = inputs[name]
            key = (graph_input.name, input_axis, rank)
            if key not in made:
                made[key] = _input_dim(model, graph_input, input_axis, rank)
            node.outputs[0].replace_all_uses_with(made[key])
        rewrites += 1
    if rewrites:
        common_passes.RemoveUnusedNodesPass()(model)
    return rewrites


def _input_dim(model: ir.Model, graph_input: ir.Value, axis: int, rank: int) -> ir.Value:
    """``Gather(Shape(graph_input), axis)`` (a scalar, or [1] for rank 1), right after a Shape of
    the input (the graph's own, or a new one at the top)."""
    shape_name, index_name = f"{graph_input.name}.shape", f"{graph_input.name}.dim{axis}.index{rank}"
    shapes = [u.node for u in graph_input.uses() if u.node.op_type == "Shape" and not u.node.attributes]
    shape = next((n for n in shapes if n.outputs[0].name == shape_name), shapes[0] if shapes else None)
    if shape is None:
        shape = ir.node("Shape", [graph_input])
        shape.outputs[0].name = shape_name
        shape.outputs[0].dtype = ir.DataType.INT64
        shape.outputs[0].shape = ir.Shape([len(graph_input.shape) if graph_input.shape is not None else None])
        first = next(iter(model.graph), None)
        if first is None:
            model.graph.append(shape)
        else:
            model.graph.insert_before(first, shape)
    if index_name not in model.graph.initializers:
        index = np.array(axis, dtype=np.int64).reshape((1,) * rank)
        model.graph.register_initializer(ir.Value(name=index_name, const_value=ir.tensor(index)))
    for use in shape.outputs[0].uses():  # an earlier run made it already
        if use.node.op_type == "Gather" and use.node.inputs[1] is model.graph.initializers[index_name]:
            return use.node.outputs[0]
    gather = ir.node("Gather", [shape.outputs[0], model.graph.initializers[index_name]], attributes={"axis": 0})
    gather.outputs[0].name = _unused_name(model, f"{graph_input.name}.dim{axis}.{rank}")
    gather.outputs[0].dtype = ir.DataType.INT64
    gather.outputs[0].shape = ir.Shape([1] * rank)
    model.graph.insert_after(shape, gather)
    return gather.outputs[0]


def _unused_name(model: ir.Model, base: str) -> str:
    taken = {v.name for node in model.graph for v in node.outputs} | set(model.graph.initializers)
    taken |= {v.name for v in model.graph.inputs}
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}.{n}"
    return name


def _const_ints(value: ir.Value | None, default: list[int] | None = None) -> list[int] | None:
    if value is None:
        return default
    const = value.const_value
    return None if const is None or const.numpy().ndim != 1 else [int(v) for v in const.numpy()]


def _static_slice(node: ir.Node) -> np.ndarray | str | None:
    """The value of ``Slice(Shape(x), starts, ends[, [0][, steps]])`` when every dimension it
    takes is a known size, else why not; None for a Slice of anything else (not a candidate)."""
    shape_node = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    if shape_node is None or shape_node.op_type != "Shape":
        return None
    if shape_node.attributes:
        return "its Shape takes a start or end"
    source = shape_node.inputs[0]
    inputs = [*node.inputs, None, None][:5]
    starts, ends = _const_ints(inputs[1]), _const_ints(inputs[2])
    axes, steps = _const_ints(inputs[3], [0]), _const_ints(inputs[4], [1])
    if source is None or source.shape is None:
        return "the sliced shape's tensor has no known shape"
    if starts is None or ends is None or axes is None or steps is None:
        return "its starts, ends, axes or steps are not constants"
    if len(starts) != 1 or len(ends) != 1 or axes not in ([0], [-1]) or steps != [1]:
        return "it is not one contiguous range"
    dims = list(source.shape.dims)[slice(starts[0], ends[0])]
    if not all(isinstance(d, int) for d in dims):
        return f"the dimensions it takes of {source.name} are not all known sizes"
    return np.array(dims, dtype=np.int64)


def static_shape_slices(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Step 2b: ``Slice(Shape(x), ...)`` whose dimensions are all known sizes is that constant (the
    TorchScript export of ``nn.MultiheadAttention`` computes its scale from the head size so); each
    other Slice of a Shape is recorded in ``skipped`` with the reason."""
    rewrites = 0
    for node in list(model.graph):
        if node.op_type != "Slice" or node.domain not in ("", "ai.onnx") or node.outputs[0].is_graph_output():
            continue
        dims = _static_slice(node)
        if dims is None:
            continue
        if isinstance(dims, str):
            skip(skipped, node, dims)
            continue
        size = ir.Value(name=_unused_name(model, f"{node.outputs[0].name or 'dims'}.size"), const_value=ir.tensor(dims))
        model.graph.register_initializer(size)
        node.outputs[0].replace_all_uses_with(size)
        rewrites += 1
    if rewrites:
        common_passes.RemoveUnusedNodesPass()(model)
    return rewrites


def _not_identity(source: ir.Value | None, out: ir.Value) -> str | None:
    """Why a Reshape of ``source`` to ``out`` is not known to keep the shape; None when it is."""
    if source is None or source.shape is None or out.shape is None:
        return "its input or output shape is unknown"
    if out.is_graph_output():
        return "its output is a graph output"
    if len(source.shape) != len(out.shape):
        return f"it changes the rank ({len(source.shape)} -> {len(out.shape)})"
    if _unknowns(list(source.shape.dims)):
        return f"{source.name}'s shape has unknown dimensions"
    if not all(_same(a, b) for a, b in zip(source.shape.dims, out.shape.dims, strict=True)):
        return f"it changes the shape ({_dims_text(source.shape)} -> {_dims_text(out.shape)})"
    return None


def _dims_text(shape: ir.Shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (_name(d) or "?") for d in shape.dims) + "]"


def identity_reshapes(model: ir.Model, skipped: Skipped | None = None) -> int:
    """Step 3: drop a Reshape whose output shape is its input's, every dimension known; each other
    Reshape is recorded in ``skipped`` with the reason."""
    dropped = 0
    for node in list(model.graph):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
            continue
        source, out = node.inputs[0], node.outputs[0]
        reason = _not_identity(source, out)
        if reason is not None or source is None:
            skip(skipped, node, reason or "it has no input")
            continue
        out.replace_all_uses_with(source)
        model.graph.remove(node, safe=True)
        dropped += 1
    return dropped


def _same(a: object, b: object) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return _name(a) is not None and _name(a) == _name(b)


def apply(model: ir.Model, skipped: Skipped | None = None) -> int:
    """The three steps; returns their rewrites. Where steps 2 and 3 find nothing to rewrite, the
    shapes of step 1 are taken back: the graph is written as it came (its own inference kept).
    The candidates of steps 2 and 3 left as they were are recorded in ``skipped`` with the reason."""
    before = infer(model)
    if not before:
        return 0
    rewrites = canonical_dims(model, skipped) + static_shape_slices(model, skipped)
    rewrites += identity_reshapes(model, skipped)
    if rewrites:
        fold_constants(model)  # sizes now known make constants of what is computed from them (a scale)
    else:
        for value, shape in before.items():
            value.shape = shape
    return rewrites

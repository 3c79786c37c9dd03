"""Edits of an onnx-ir graph shared by the fusion and quantization passes: add a constant, put a
new value in place of an old one, remove nodes with the initializers only they read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as initializer ``name`` of ``graph`` (its shape and dtype) and return its value."""
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Every use of ``old`` reads ``new`` instead, a graph output included; ``new`` takes the old
    value's name, shape and type (a graph output keeps its name)."""
    new.shape, new.type = old.shape, old.type
    if old.name:
        name, old.name = old.name, None
        new.name = name
    ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)


def remove_nodes(graph: ir.Graph, nodes: Sequence[ir.Node]) -> None:
    """Remove ``nodes`` (each unused once the ones before it are gone: consumers first) and the
    initializers that nothing reads any more."""
    inputs = [v for n in nodes for v in n.inputs if v is not None and v.is_initializer()]
    for node in nodes:
        graph.remove(node, safe=True)
    for value in inputs:
        if not value.uses() and value.name is not None and value.name in graph.initializers:
            graph.initializers.pop(value.name)

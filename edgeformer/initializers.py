"""New constants on an onnx-ir graph: one way to add an initializer, for the fusion and quantization passes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as initializer ``name`` of ``graph`` (its shape and dtype) and return its value."""
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    value.const_value = ir.tensor(array, name=name)
    graph.register_initializer(value)
    return value

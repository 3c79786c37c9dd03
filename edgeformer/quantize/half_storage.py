"""Weights that stay in float in an int8 graph are stored as float16 and widened when the graph loads.

Mixed precision keeps the most sensitive nodes in float; on a small model those few fp32 tables
are a large share of the file (on the demo decoder, three nodes are 28% of the int8 bundle).
``store_half`` writes each large fp32 initializer as float16 followed by ``Cast(to=FLOAT)``:
onnxruntime folds the Cast of a constant when the session is created, so the arithmetic stays fp32
and only the bytes on disk halve. The values move by float16 rounding (a relative 2^-11), far
below int8's steps; the budget search measures the graphs with it applied, so what it reports
holds for the bundle as written.

Only weight matrices and tables (rank 2 and up) are converted; small ones, vectors (biases, norms,
the int8 weights' scales), values outside float16's range, and initializers that are graph outputs
or graph inputs' defaults are left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgeformer.graph_edits import add_initializer

MIN_ELEMENTS = 4096  # below this the saving is noise next to the graph's own bytes
FP16_MAX = float(np.finfo(np.float16).max)
DESCRIPTION = "weights kept in float are stored as float16, widened to float32 when the session loads"


def store_half(path: Path, *, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite the graph at ``path`` with its large fp32 initializers stored as float16 behind a
    Cast; returns how many were converted."""
    model = ir.load(path)
    graph = model.graph
    inputs = {v.name for v in graph.inputs}
    casts = []
    for name, value in list(graph.initializers.items()):
        tensor = value.const_value
        if tensor is None or tensor.dtype != ir.DataType.FLOAT or value.name in inputs or value.is_graph_output():
            continue
        if tensor.size < min_elements or len(tensor.shape) < 2 or not value.uses():
            continue
        array = tensor.numpy()
        if not np.isfinite(array).all() or float(np.abs(array).max(initial=0.0)) > FP16_MAX:
            continue
        half = add_initializer(graph, f"{value.name}_fp16", array.astype(np.float16))
        cast = ir.node("Cast", [half], attributes={"to": ir.DataType.FLOAT}, name=f"{value.name}_widen")
        ir.convenience.replace_all_uses_with(value, cast.outputs[0])
        graph.initializers.pop(name)
        cast.outputs[0].name = name  # readers keep the name they knew
        cast.outputs[0].shape, cast.outputs[0].type = value.shape, value.type
        casts.append(cast)
    if casts:
        first = next(iter(graph), None)
        if first is None:
            graph.extend(casts)
        else:
            graph.insert_before(first, casts)
        ir.save(model, path)
    return len(casts)

"""Sessions that expose values inside a graph: the named node outputs made graph outputs, run
without graph optimizations so that every one of them still exists under its name."""

from __future__ import annotations

from collections.abc import Iterable

import onnx
import onnxruntime as ort


def probe_session(model: onnx.ModelProto, names: Iterable[str], threads: int = 0) -> ort.InferenceSession:
    """A CPU session of ``model`` whose outputs are its own plus ``names`` (``threads`` 0: onnxruntime's default)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name and name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

"""Which MatMuls int4 hurts most, from one run of the float graph instead of one graph per node.

The search keeps the most sensitive nodes in float. Scoring a node by quantizing it alone and
running the whole model costs one quantization and one whole-model run per node: on a
GPT-2-small-sized decoder (49 MatMuls) that was most of a 20-minute export. Here each node is
scored by its own output error: the float graph runs once per row with every candidate's input
and output added as graph outputs; a side graph holding only the MatMulNBits nodes of the
all-int4 graph (the very weights, scales and settings the bundle would get) takes those float
inputs; the score is ||y_int4 - y|| / ||y|| over all rows. The bisection over how many to keep
then judges whole graphs on the budget metrics, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeformer.quantize.mixed import Feeds, _session
from edgeformer.quantize.weights import SUFFIX

KEY = "output_error_alone"  # what a kept node's score means, in the report


def _probe(model: onnx.ModelProto, candidates: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """The float graph with each candidate's activation input and output as graph outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    nodes = {n.name: n for n in probe.graph.node}
    taps = {name: (nodes[name].input[0], nodes[name].output[0]) for name in candidates}
    present = {o.name for o in probe.graph.output}
    for x, y in taps.values():
        for tensor in (x, y):
            if tensor not in present:
                probe.graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
                present.add(tensor)
    return probe, taps


def _side(quantized: onnx.ModelProto, candidates: Sequence[str], taps: dict[str, tuple[str, str]]) -> onnx.ModelProto:
    """A graph of the all-int4 graph's MatMulNBits nodes alone: input x of each, output y + ":int4"."""
    nodes = {n.name: n for n in quantized.graph.node}
    inits = {i.name: i for i in quantized.graph.initializer}
    graph = helper.make_graph([], "int4_side", [], [])
    inputs: set[str] = set()
    weights: set[str] = set()
    for name in candidates:
        q = nodes[name + SUFFIX]
        x, y = taps[name]
        node = onnx.NodeProto()
        node.CopyFrom(q)
        node.output[0] = y + ":int4"
        graph.node.append(node)
        if x not in inputs:
            graph.input.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
            inputs.add(x)
        graph.output.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
        for i in q.input[1:]:
            if i in inits and i not in weights:
                graph.initializer.append(inits[i])
                weights.add(i)
    side = helper.make_model(graph, opset_imports=list(quantized.opset_import))
    side.ir_version = quantized.ir_version
    return side


def _rows(feed: Feeds) -> list[Feeds]:
    """A batch feed as one feed per row: the probe's extra outputs of a whole batch are large."""
    n = next(iter(feed.values())).shape[0]
    return [{k: v[i : i + 1] for k, v in feed.items()} for i in range(n)]


def rank(
    model: onnx.ModelProto, quantized: Path, candidates: Sequence[str], feeds: Sequence[Feeds]
) -> tuple[dict[str, float], str]:
    """Each candidate's relative output error in int4, alone (scores, and what they mean)."""
    probe, taps = _probe(model, candidates)
    side = _side(onnx.load(str(quantized)), candidates, taps)
    paths = [quantized.with_name(quantized.name + s) for s in (".probe.onnx", ".side.onnx")]
    try:
        onnx.save(probe, paths[0])
        onnx.save(side, paths[1])
        float_run, int4_run = _session(paths[0]), _session(paths[1])
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
    wanted = {i.name for i in float_run.get_inputs()}
    tapped = sorted({t for pair in taps.values() for t in pair})
    err, ref = dict.fromkeys(candidates, 0.0), dict.fromkeys(candidates, 0.0)
    for feed in feeds:
        for row in _rows({k: v for k, v in feed.items() if k in wanted}):
            values = dict(zip(tapped, float_run.run(tapped, row), strict=True))
            xs = {i.name: values[i.name] for i in int4_run.get_inputs()}
            got = dict(zip([o.name for o in int4_run.get_outputs()], int4_run.run(None, xs), strict=True))
            for name, (_, y) in taps.items():
                want = values[y].astype(np.float64)
                err[name] += float(np.square(got[y + ":int4"] - want).sum())
                ref[name] += float(np.square(want).sum())
    return {n: float(np.sqrt(err[n] / ref[n])) if ref[n] > 0 else 0.0 for n in candidates}, KEY

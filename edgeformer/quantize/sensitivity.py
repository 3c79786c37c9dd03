"""Candidates scored and sets confirmed on ONE gated session, not a quantized graph and a session per trial.

The precision search used to write, load and run a whole quantized graph per candidate (and per
confirmation): nodes x model in quantization, files and sessions. Here one session holds the
all-reduced graph of ``int4_rank.gated`` (every changed node's float twin beside it, blended by a gate).

Scores: one run with every gate closed (the float graph; a tied head's int8 table no gate reaches
stays reduced: the floor) also measures each candidate's LOCAL error, as quantization debugging tools
do: a closed gate feeds the reduced node the float activations, so ``reduced(x) - float(x)`` is the
error that node alone adds; the graph sums its square and the float output's square per node (two
scalars per node), and a packed Q/K/V MatMul merged into one QAttention is scored from its captured
input with the int8 product simulated in numpy. The search's scores are the budget each node uses
alone (its gate open, the others closed: one run of the first calibration batch per node, in the
budget's own metrics): local errors alone misrank what top-1 needs (a trained decoder's LM head has
the smallest local error and the largest effect on top-1). Without a judge, the local errors are the
scores.

Confirmations: gates open (the reduced node) except for the nodes kept in float (closed: the float
twin) is, to float rounding, the graph the quantizer writes with those nodes excluded. The chosen set
is then written by the real quantizer and judged once more on everything (``mixed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeformer.quantize import int4_rank, int8, qattention
from edgeformer.quantize.mixed import Feeds, Ranking, _session

KEY = "local_error"
_DELTA, _FLOAT, _INPUT = "local_error/delta/", "local_error/float/", "local_error/input/"


class GatedSession:
    """The gated graph seen as the mixed graph with ``kept`` in float and every other gateable node
    reduced: the model's own inputs and outputs (``outputs_of`` and ``judge_cases`` take it as a session)."""

    def __init__(self, session: Any, outputs: Sequence[str], kept: Sequence[str] = ()) -> None:
        self.session, self.outputs = session, list(outputs)
        gates = [i.name for i in session.get_inputs() if i.name.startswith(int4_rank.gate_name(""))]
        floats = {int4_rank.gate_name(n) for n in kept}
        self.gates = {g: np.asarray(0.0 if g in floats else 1.0, np.float32) for g in gates}

    def with_float(self, kept: Sequence[str]) -> GatedSession:
        return GatedSession(self.session, self.outputs, kept)

    def get_inputs(self) -> list[Any]:
        return [i for i in self.session.get_inputs() if i.name not in self.gates]

    def get_outputs(self) -> list[Any]:
        return [o for o in self.session.get_outputs() if o.name in self.outputs]

    def get_providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, names: Sequence[str] | None, feeds: Feeds) -> list[np.ndarray]:
        return list(self.session.run(list(names or self.outputs), feeds | self.gates))


def _instrument(graph: onnx.GraphProto, model: onnx.ModelProto, candidates: Sequence[str]) -> dict[str, str]:
    """Add to ``graph`` (the gated graph) per gated candidate the sums of squares of its local error and of
    its float output, and per packed Q/K/V MatMul merged away its input: how each candidate is scored."""
    float_nodes = {n.name: n for n in model.graph.node}
    inits = {i.name for i in model.graph.initializer}
    made = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    how: dict[str, str] = {}
    for name in candidates:
        node = float_nodes.get(name)
        if node is None:
            continue
        y = node.output[0]
        if f"{y}/delta" in made:
            for prefix, value in ((_DELTA, f"{y}/delta"), (_FLOAT, f"{y}/float")):
                graph.node.append(helper.make_node("ReduceSumSquare", [value], [prefix + name], keepdims=0))
                graph.output.append(helper.make_tensor_value_info(prefix + name, onnx.TensorProto.FLOAT, []))
            how[name] = "gate"
        elif node.op_type == "MatMul" and node.input[0] in made and node.input[1] in inits:
            graph.node.append(helper.make_node("Identity", [node.input[0]], [_INPUT + name]))
            graph.output.append(helper.make_tensor_value_info(_INPUT + name, onnx.TensorProto.FLOAT, None))
            how[name] = "simulated"
    return how


def simulated_int8_error(x: np.ndarray, w: np.ndarray, reduce_range: bool) -> float:
    """The relative error of ``x @ w`` as QAttention computes it: ``w`` symmetric int8 per output
    column (``qattention``'s own weights), ``x`` uint8 per tensor (DynamicQuantizeLinear)."""
    x = x.reshape(-1, x.shape[-1]).astype(np.float32)
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero = np.clip(np.round(-low / scale), 0, 255)
    xq = (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale
    wq, wscale = qattention._quantize_columns(w, reduce_range)
    y, yq = x @ w, xq @ (wq.astype(np.float32) * wscale)
    return float(np.sqrt(np.sum((yq - y) ** 2) / max(float(np.sum(y * y)), 1e-30)))


def gated_session(model: onnx.ModelProto, quantized: Path, candidates: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """One session of the all-reduced graph at ``quantized`` with a gate and a float twin per changed
    node, instrumented for the local errors of ``candidates``; and how each candidate is scored."""
    path = quantized.with_name(quantized.name + ".gated.onnx")
    try:
        gated = int4_rank.gated(model, onnx.load(str(quantized)), [n.name for n in model.graph.node])
        how = _instrument(gated.graph, model, candidates)
        onnx.save(gated, path)
        del gated  # the protobuf copy: the session holds its own
        return _session(path), how
    finally:
        path.unlink(missing_ok=True)


def rank(
    model: onnx.ModelProto, quantized: Path, candidates: Sequence[str], feeds: Sequence[Feeds], judge: Any = None
) -> Ranking:
    """Every candidate scored on the first calibration batch by ONE gated session, which stays open for the
    search's confirmations (``Ranking.confirm``). With ``judge`` (outputs -> share of the budget used), a
    gateable node's score is the budget it uses alone (its gate open, every other closed), less what the
    closed graph already uses (a tied head's int8 table no gate reaches): the budget's own metrics, as
    top-1 on a trained decoder's LM head needs (its local error is the smallest, its effect on top-1 the
    largest). The all-closed run measures every local error too (``Ranking.local``); without ``judge``
    the local errors are the scores, and the nodes no gate reaches are scored by simulation."""
    session, how = gated_session(model, quantized, candidates)
    view = GatedSession(session, [o.name for o in model.graph.output])  # every gate open: all reduced
    closed = view.with_float(_all_gates(view))  # every gate closed: the float graph, local errors beside it
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    first = {k: v for k, v in feeds[0].items() if k in wanted}
    got = dict(zip(names, session.run(names, first | closed.gates), strict=True))
    local = _local_errors(model, how, got)
    if judge is None:
        return Ranking(local, KEY, view, runs=1, ungated={n for n, kind in how.items() if kind != "gate"}, local=local)
    outputs = [o.name for o in model.graph.output]
    floor = judge([{k: got[k] for k in outputs}])
    gated = [n for n in candidates if how.get(n) == "gate"]
    scores = {}
    for name in gated:
        alone = view.with_float([g for g in _all_gates(view) if g != name])
        scores[name] = max(judge([dict(zip(outputs, alone.run(outputs, first), strict=True))]) - floor, 0.0)
    return Ranking(scores, int4_rank.KEY, view, runs=1 + len(gated), local=local)


def _local_errors(model: onnx.ModelProto, how: dict[str, str], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Each candidate's relative local error from the all-closed run's outputs (``_instrument``)."""
    weights = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    reduce_range = int8.needs_reduce_range()
    local = {}
    for name, kind in how.items():
        if kind == "gate":
            local[name] = float(np.sqrt(got[_DELTA + name] / max(float(got[_FLOAT + name]), 1e-30)))
        else:
            w = numpy_helper.to_array(weights[nodes[name].input[1]])
            local[name] = simulated_int8_error(got[_INPUT + name], w, reduce_range)
    return local


def _all_gates(view: GatedSession) -> list[str]:
    """Node names of every gate (a tied head's Gather too): all closed for the local-error run."""
    prefix = int4_rank.gate_name("")
    return [g[len(prefix) :] for g in view.gates]

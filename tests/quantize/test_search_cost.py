"""The precision search's cost does not grow with the node count times the model (issue #21): the
candidates are scored on one batch by ONE gated session (no graph or session per node), the
confirmations run on that session (k doubling, then bisection: O(log n)), and only two graphs are
quantized and written (the all-reduced one, and the chosen one)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeformer import budget as budgets
from edgeformer.quantize import mixed, sensitivity
from edgeformer.quantize.mixed import quantize_within_budget

N, WIDTH, SENSITIVE = 32, 16, ("n5", "n17", "n29")


def _chain() -> onnx.ModelProto:
    """N MatMuls in a row, each near the identity: the output is the input, give or take."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for i in range(N):
        w = (np.eye(WIDTH) + 0.01 * rng.standard_normal((WIDTH, WIDTH))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"], name=f"n{i}"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])
    y = helper.make_tensor_value_info(f"h{N - 1}", TensorProto.FLOAT, [None, WIDTH])
    return helper.make_model(
        helper.make_graph(nodes, "chain", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)]
    )


def _reducer(calls: list[list[str]]) -> mixed.Quantizer:
    """A "reduced precision" that renames each node it reduces (as the real quantizers do: a new node ends
    in the float node's output) and perturbs its weight: a lot for SENSITIVE, next to nothing otherwise."""

    def quantize(m: onnx.ModelProto, out, exclude=()):
        calls.append(list(exclude))
        copy = onnx.ModelProto()
        copy.CopyFrom(m)
        for node in copy.graph.node:
            if node.name in exclude:
                continue
            w = next(numpy_helper.to_array(i) for i in m.graph.initializer if i.name == node.input[1])
            noise = (0.3 if node.name in SENSITIVE else 1e-4) * np.random.default_rng(len(node.name)).standard_normal(
                w.shape
            )
            copy.graph.initializer.append(numpy_helper.from_array((w + noise).astype(np.float32), node.input[1] + "/q"))
            node.name, node.input[1] = node.name + "/q", node.input[1] + "/q"
        onnx.save(copy, out)
        return out

    return quantize


def test_the_search_scores_and_confirms_in_log_n_on_one_gated_session_writing_two_graphs(tmp_path, monkeypatch):
    sessions: list[str] = []
    make = mixed._session
    monkeypatch.setattr(mixed, "_session", lambda path, threads=2: sessions.append(str(path)) or make(path, threads))
    monkeypatch.setattr(sensitivity, "_session", mixed._session)
    calls: list[list[str]] = []
    feeds = [{"x": np.random.default_rng(1).standard_normal((8, WIDTH)).astype(np.float32)} for _ in range(2)]
    lines: list[str] = []
    candidates = [f"n{i}" for i in range(N)]
    result = quantize_within_budget(
        _chain(), tmp_path / "q.onnx", _reducer(calls), feeds, {"cosine": 0.9999},
        candidates=candidates, rank=sensitivity.rank, log=lines.append,
    )  # fmt: skip
    # the three perturbed nodes, and only them, stay in float; the budget is met on the written graph
    assert sorted(k["node"] for k in result.kept_in_float) == sorted(SENSITIVE), result.kept_in_float
    assert result.within_budget and not budgets.violations(result.measured, {"cosine": 0.9999})
    assert all(k["budget_used_alone"] > 0.1 for k in result.kept_in_float)
    # two graphs quantized (all reduced; the chosen set), four sessions (float, all-reduced, gated, chosen)
    assert len(calls) == 2 and sorted(calls[1]) == sorted(SENSITIVE) and result.tried == 2
    assert len(sessions) == 4 and sessions[2].endswith(".gated.onnx"), sessions
    # doubling from 1 (1, 2, 4 met) then bisection (3): O(log n), where the old search scored each node alone
    assert result.confirmations == 4 <= 2 * math.ceil(math.log2(N)), lines
    # scored on one batch by one gated session: one run all gates closed (local errors too), one per node
    assert any(f"ranked {N} candidates by budget_used_alone from {N + 1} run(s) of one batch" in line for line in lines)
    local = next(line for line in lines if "largest local errors" in line)
    assert all(name in local for name in SENSITIVE), local
    gated = [line for line in lines if "confirmation" in line and "(gated session)" in line]
    assert len(gated) == 4 and "s so far, at most" in gated[0], lines
    assert any(
        line.startswith("  search: 3 node(s) kept in float after 4 whole-model confirmation(s)") for line in lines
    )
    assert "4 confirmation(s), 2 graphs written" in result.tried_text()


@pytest.mark.parametrize(
    ("answer", "n", "calls"), [(1, 32, [1]), (3, 32, [1, 2, 4, 3]), (20, 32, [1, 2, 4, 8, 16, 32, 24, 20, 18, 19, 20])]
)
def test_k_doubles_then_bisects(answer, n, calls):
    seen: list[int] = []

    def meets(k: int, left: int) -> bool:
        seen.append(k)
        return k >= answer

    assert mixed._smallest_meeting(meets, n) == answer and seen == calls


def test_a_written_graph_that_misses_where_the_gated_one_met_goes_on_over_written_graphs(tmp_path, monkeypatch):
    """Float rounding between the gated session and the written graph could differ at the edge of the
    budget: the written graph is judged, and a miss there searches larger sets on written graphs."""
    calls: list[list[str]] = []
    real = mixed._Trials.score

    def stricter(self, exclude, include=None, final=True):  # written graphs need one more node in float
        measured = real(self, exclude, include, final)
        return measured | ({"cosine": 0.0} if len(exclude) == len(SENSITIVE) else {})

    monkeypatch.setattr(mixed._Trials, "score", stricter)
    feeds = [{"x": np.random.default_rng(1).standard_normal((8, WIDTH)).astype(np.float32)}]
    lines: list[str] = []
    result = quantize_within_budget(
        _chain(), tmp_path / "q.onnx", _reducer(calls), feeds, {"cosine": 0.9999},
        candidates=[f"n{i}" for i in range(N)], rank=sensitivity.rank, log=lines.append,
    )  # fmt: skip
    assert len(result.kept_in_float) == 4 and result.within_budget, lines
    assert any("the written graph with 3 in float misses" in line for line in lines), lines
    assert len(calls[-1]) == 4 and set(SENSITIVE) <= set(calls[-1])


class _Session:
    """A language model in numpy (logits a fixed function of the tokens), counting its runs."""

    def __init__(self, noise: float) -> None:
        self.noise, self.runs, self.table = noise, 0, np.random.default_rng(3).standard_normal((50, 50))

    def get_inputs(self):
        return [type("I", (), {"name": n}) for n in ("input_ids", "attention_mask")]

    def get_outputs(self):
        return [type("O", (), {"name": n}) for n in ("logits", "present.0.key")]

    def run(self, names, feeds):
        self.runs += 1
        ids = feeds["input_ids"]
        logits = self.table[ids] + self.noise * np.sin(np.arange(ids.size * 50)).reshape(*ids.shape, 50)
        return [logits.astype(np.float32), np.zeros((ids.shape[0], 2, ids.shape[1], 4), np.float32)]


def test_the_search_measures_one_batch_run_at_a_time_row_by_row_with_the_same_numbers():
    from edgeformer.quantize.mixed import outputs_of
    from edgeformer.quantize.streamed import measure_session

    rng = np.random.default_rng(0)
    feeds = []
    for batch, length in ((4, 9), (2, 5), (1, 7)):
        mask = np.ones((batch, length), np.int64)
        mask[0, -2:] = 0  # padding on the first row
        feeds.append({"input_ids": rng.integers(0, 50, (batch, length)), "attention_mask": mask})
    reference = outputs_of(_Session(0.0), feeds)
    session = _Session(0.3)
    streamed = measure_session(session, reference, feeds, language_model=True)
    whole = budgets.measure(reference, outputs_of(_Session(0.3), feeds), feeds, language_model=True)
    assert session.runs == 3 and set(streamed) == set(whole) == {"cosine", "cosine_min", "top1", "perplexity",
                                                                  "perplexity_reference"}  # fmt: skip
    for name, value in whole.items():
        assert streamed[name] == pytest.approx(value, rel=1e-9), name
    assert whole["cosine"] < 0.999 and whole["top1"] < 1.0  # the noise is measured, not lost in the split


def test_a_set_keeping_an_ungated_node_in_float_is_confirmed_on_a_written_graph(tmp_path):
    """A candidate no gate reaches (a packed Q/K/V MatMul merged into one QAttention) cannot be put back
    in float by the gated session: every set that keeps it in float is confirmed on a written graph."""

    def rank(*args):
        ranking = sensitivity.rank(*args)
        ranking.ungated = {"n17"}
        return ranking

    calls: list[list[str]] = []
    feeds = [{"x": np.random.default_rng(1).standard_normal((8, WIDTH)).astype(np.float32)}]
    lines: list[str] = []
    result = quantize_within_budget(
        _chain(), tmp_path / "q.onnx", _reducer(calls), feeds, {"cosine": 0.9999},
        candidates=[f"n{i}" for i in range(N)], rank=rank, log=lines.append,
    )  # fmt: skip
    assert sorted(k["node"] for k in result.kept_in_float) == sorted(SENSITIVE) and result.within_budget
    written = calls[1:]  # after the all-reduced graph; the chosen set's, last, is not written twice
    assert written and all("n17" in c for c in written) and sorted(written[-1]) == sorted(SENSITIVE), calls
    confirmations = [line for line in lines if line.startswith("    confirmation")]
    assert len(confirmations) == 4 and sum("(gated session)" not in line for line in confirmations) == len(written)

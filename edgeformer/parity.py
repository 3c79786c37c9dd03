"""Parity: does the ONNX graph compute what the torch source computes?

Numbers first (max absolute error, max relative error, cosine per output at several shapes against
the precision's tolerance), then behaviour (identical greedy tokens through the KV cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from edgeformer import tokenizer
from edgeformer.bisect import bisect
from edgeformer.budget import budget_for
from edgeformer.compare import OutputReport, compare
from edgeformer.config import ModelConfig
from edgeformer.errors import ParityError
from edgeformer.export.graphs import GraphPlan, derived_dims, make_inputs, run_torch
from edgeformer.export.source import Source
from edgeformer.nn.models import as_encoder_decoder
from edgeformer.progress import Progress
from edgeformer.real_inputs import complete_inputs, read_real_inputs  # noqa: F401 - read_real_inputs importable from here
from edgeformer.runtime.generate import greedy_decoder, greedy_seq2seq
from edgeformer.runtime.session import make_session
from edgeformer.runtime.window import sliding_window
from edgeformer.verdict import judge_case, provider_note

TOLERANCE = {"fp32": 1e-4}  # reduced precisions are judged by their accuracy budget instead


@dataclass
class CaseReport:
    graph: str
    dims: dict[str, int]
    outputs: list[OutputReport]
    inputs: str = "random"  # or "real": inputs the user gave
    metrics: dict[str, float] | None = None  # reduced precision: the budget metrics against torch
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs) and not self.violations


@dataclass
class ParityReport:
    precision: str
    tolerance: float
    cases: list[CaseReport] = field(default_factory=list)
    generation: dict[str, Any] | None = None
    divergence: dict[str, Any] | None = None
    budget: dict[str, float] | None = None
    provider: str = ""  # where the graphs ran, e.g. "CPUExecutionProvider" (with a note when not the target's)
    recorded_verdict: dict[str, Any] | None = None  # the quantization verdict recorded at export / quantize
    accepted_budget_miss: dict[str, Any] | None = None  # a miss the user accepted there (--accept-budget-miss)
    rejudged_verdict: dict[str, Any] | None = None  # the recorded verdict measured again by check, on its rows
    rejudge_note: str = ""  # why it was not measured again (a bundle without verdict rows)
    torch_parity = "checked"  # a verify_bundle.SourcelessReport says "not checked"

    @property
    def ok(self) -> bool:
        # fp32 must generate the same tokens; a reduced precision reports its agreement (its
        # budget bounds top-1 agreement position by position, where one flip changes the rest)
        gen_ok = self.generation is None or self.generation["identical"] or self.precision != "fp32"
        return all(c.ok for c in self.cases) and gen_ok

    def worst(self) -> OutputReport | None:
        outs = [o for c in self.cases for o in c.outputs]
        return max(outs, key=lambda o: o.max_rel) if outs else None

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst()
        return {
            "ok": self.ok,
            "torch_parity": self.torch_parity,
            "precision": self.precision,
            "tolerance": self.tolerance,
            "budget": self.budget,
            "provider": self.provider,
            "worst_max_rel": worst.max_rel if worst else None,
            "cases": [
                {
                    "graph": c.graph,
                    "dims": c.dims,
                    "inputs": c.inputs,
                    "ok": c.ok,
                    "outputs": [asdict(o) for o in c.outputs],
                    **({"metrics": c.metrics, "violations": c.violations} if c.metrics is not None else {}),
                }
                for c in self.cases
            ],
            "generation": self.generation,
            "divergence": self.divergence,
            **({"recorded_verdict": self.recorded_verdict} if self.recorded_verdict else {}),
            **({"accepted_budget_miss": self.accepted_budget_miss} if self.accepted_budget_miss else {}),
            **({"rejudged_verdict": self.rejudged_verdict} if self.rejudged_verdict else {}),
            **({"rejudge_note": self.rejudge_note} if self.rejudge_note else {}),
        }


def _non_finite_lines(report: ParityReport) -> list[str]:
    return [
        f"  {c.graph} {c.dims}: {o.name} is not finite ({o.non_finite}); outputs must be finite numbers"
        for c in report.cases
        for o in c.outputs
        if o.non_finite
    ]


def run_onnx(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def _case(
    plan: GraphPlan,
    session: ort.InferenceSession,
    inputs: dict[str, np.ndarray],
    tolerance: float,
    dims: dict[str, int],
    kind: str = "random",
    budget: dict[str, float] | None = None,
    want: dict[str, np.ndarray] | None = None,
) -> CaseReport:
    """One shape: ``want`` (the torch outputs, computed here unless given) against the graph's."""
    want = run_torch(plan, inputs) if want is None else want
    got = run_onnx(session, inputs)
    limit = tolerance if budget is None else float("inf")  # a budget judges reduced precisions
    outputs = [compare(spec.name, want[spec.name], got[spec.name], limit) for spec in plan.outputs]
    case = CaseReport(plan.name, dims, outputs, kind)
    if budget is not None:  # the one case judge the precision search also calls (verdict.judge_case)
        lm = plan.name in ("model", "decoder") and "logits" in want
        case.metrics, case.violations = judge_case(want, got, inputs, budget, kind=kind, language_model=lm)
    return case


@dataclass
class BudgetCase:
    """One random-input shape the final parity check judges, with the torch source's outputs on it:
    computed once, judged by the precision search and then by the final check (``references``)."""

    graph: str
    dims: dict[str, int]
    inputs: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]

    @property
    def label(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.dims.items() if k != "total_sequence")


def budget_cases(source: Any, seed: int = 0) -> dict[str, list[BudgetCase]]:
    """Every graph's parity cases (``plan.cases``, the inputs ``check_graph`` makes, seed by seed),
    with the torch outputs on them, for the search to meet the budget on what the check judges."""
    out: dict[str, list[BudgetCase]] = {}
    for plan in source.plans:
        out[plan.name] = []
        for i, dims in enumerate(plan.cases):
            inputs = make_inputs(plan, dims, seed=seed + i)
            out[plan.name].append(BudgetCase(plan.name, derived_dims(dims), inputs, run_torch(plan, inputs)))
    return out


def _dims_of(plan: GraphPlan, inputs: dict[str, np.ndarray]) -> dict[str, int]:
    return {d: inputs[s.name].shape[i] for s in plan.inputs for i, d in enumerate(s.shape) if isinstance(d, str)}


def check_graph(
    plan: GraphPlan,
    session: ort.InferenceSession,
    tolerance: float,
    seed: int = 0,
    real: list[dict[str, np.ndarray]] | None = None,
    budget: dict[str, float] | None = None,
    references: list[BudgetCase] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[CaseReport]:
    """Random inputs at every shape of plan.cases, then the real inputs given, if any. ``references``
    (``budget_cases``) are those very inputs with the torch outputs already computed: reused. One
    session for every case; on long work, ``log`` gets a progress line per case with an estimate."""
    reports = []
    progress = Progress(f"{plan.file}: case", len(plan.cases) + len(real or []), log)
    for i, dims in enumerate(plan.cases):
        known = references[i] if references is not None and i < len(references) else None
        inputs = make_inputs(plan, dims, seed=seed + i) if known is None else known.inputs
        want = None if known is None else known.reference
        reports.append(_case(plan, session, inputs, tolerance, derived_dims(dims), budget=budget, want=want))
        progress.step(", ".join(f"{k} {v}" for k, v in dims.items()))
    for inputs in real or []:
        reports.append(_case(plan, session, inputs, tolerance, _dims_of(plan, inputs), "real", budget))
        progress.step("real inputs")
    return reports


@torch.no_grad()
def torch_greedy(model: torch.nn.Module, cfg: ModelConfig, prompt: np.ndarray, steps: int) -> np.ndarray:
    """Greedy tokens from the torch source, through its own KV cache."""
    ids = torch.from_numpy(prompt)
    tokens = []
    if cfg.family == "encoder-decoder":
        seq2seq = as_encoder_decoder(model)
        cross = seq2seq.cross_key_values(seq2seq.encode(ids))
        nxt = torch.full((ids.shape[0], 1), max(cfg.bos_token_id, 0), dtype=torch.long)  # as the runtime starts
        past = None
        for _ in range(steps):
            out = seq2seq.decode(nxt, cross, past_key_values=past)
            nxt, past = out["logits"][:, -1:].argmax(-1), out["present_key_values"]
            tokens.append(nxt)
    else:
        out = model(ids)
        for _ in range(steps):
            nxt = out["logits"][:, -1:].argmax(-1)
            tokens.append(nxt)
            out = model(nxt, past_key_values=out["present_key_values"])
    return torch.cat(tokens, dim=1).numpy()


def generation_parity(
    source: Source,
    sessions: dict[str, ort.InferenceSession],
    steps: int = 32,
    prompt: np.ndarray | None = None,
    memo: dict[tuple[bytes, int], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Greedy tokens of the torch source and of the bundle (KV cache on both sides) for N steps.
    ``memo`` keeps the torch tokens per prompt and length: a second check of the same source (the
    fp32 stage, then the quantized bundle) reuses them instead of generating again."""
    cfg = source.config
    assert cfg is not None, "generation parity is for edgeformer models (a config)"
    if prompt is not None:
        prompt = prompt[:, : max(1, cfg.max_positions - steps)]
    elif source.tokenizer == "bytes":
        prompt = np.array(
            [tokenizer.encode("Return the", bos=True), tokenizer.encode("class Foo:", bos=True)], dtype=np.int64
        )
    else:
        prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 5), dtype=np.int64)
    if cfg.family == "decoder":
        steps = min(steps, cfg.max_positions - prompt.shape[1])
        plan = source.plans[0]  # a local decoder's bundle generates through its sliding window, as apps run it
        got = greedy_decoder(sessions["model"], prompt, steps, window=sliding_window(plan.sliding_window, plan.inputs))
    else:
        steps = min(steps, cfg.max_positions)
        got = greedy_seq2seq(sessions["encoder"], sessions["decoder"], prompt, max(cfg.bos_token_id, 0), steps)
    key = (prompt.tobytes() + str(prompt.shape).encode(), steps)
    if memo is not None and key in memo:
        want = memo[key]
    else:
        want = torch_greedy(source.model, cfg, prompt, steps)
        if memo is not None:
            memo[key] = want
    agree = int((got == want).all(axis=0).sum()) if got.shape == want.shape else 0
    first = next((i for i in range(min(got.shape[1], want.shape[1])) if not (got[:, i] == want[:, i]).all()), None)
    return {
        "steps": steps,
        "batch": int(prompt.shape[0]),
        "identical": bool(got.shape == want.shape and (got == want).all()),
        "steps_agreeing": agree,
        "first_difference": first,
    }


def check_source(
    source: Source,
    graphs: dict[str, Any],
    precision: str = "fp32",
    *,
    providers: tuple[str, ...] = ("cpu",),
    opset: int = 18,
    generation_steps: int = 32,
    real_inputs: dict[str, np.ndarray] | None = None,
    log: Any = lambda _msg: None,
    raise_on_failure: bool = True,
    budget: dict[str, float] | None = None,
    target_providers: tuple[str, ...] = (),
    references: dict[str, list[BudgetCase]] | None = None,
    memo: dict[tuple[bytes, int], np.ndarray] | None = None,
) -> ParityReport:
    """Compare every graph (name -> .onnx path) with the torch source at several shapes (and on
    ``real_inputs``, given to the first graph), then greedy generation. On a numeric failure,
    bisect to the first diverging module and node. fp32 is held to ``TOLERANCE``; a reduced
    precision (int8, int4, fp16) to its accuracy ``budget`` (default: the precision's). The report
    names the provider the graphs ran on, and says so when ``target_providers`` (the bundle's
    target) wanted another one. ``references`` (``budget_cases``): the torch outputs, computed once;
    ``memo``: the torch source's greedy tokens, kept across checks of the same source."""
    if precision != "fp32":
        budget = {k: v for k, v in budget_for(precision, budget).items() if k != "perplexity" or real_inputs}
    report = ParityReport(precision, TOLERANCE.get(precision, float("inf")), budget=budget)
    sessions = {name: make_session(path, providers, precision=precision) for name, path in graphs.items()}
    ran_on = next(iter(sessions.values())).get_providers()[0] if sessions else "none"
    report.provider = provider_note(ran_on, tuple(target_providers))
    log(f"  running the graphs on {report.provider}")
    real = complete_inputs(source.plans[0], real_inputs) if real_inputs is not None else None
    for plan in source.plans:
        given = [real] if real and plan is source.plans[0] else None
        cases = check_graph(
            plan,
            sessions[plan.name],
            report.tolerance,
            real=given,
            budget=budget,
            references=(references or {}).get(plan.name),
            log=log,
        )
        report.cases += cases
        _bisect_first_failure(report, plan, cases, Path(graphs[plan.name]), opset, source, real)
        log(_graph_line(Path(graphs[plan.name]).name, cases, report, precision))
    if source.config is not None and source.config.family != "encoder":
        prompt = real["input_ids"] if real is not None else None
        report.generation = generation_parity(source, sessions, generation_steps, prompt, memo)
        log(_generation_line(report.generation, precision, budget))
    if not report.ok and raise_on_failure:
        error = ParityError(format_failure(report))
        error.report = report
        raise error
    return report


def _bisect_first_failure(
    report: ParityReport,
    plan: GraphPlan,
    cases: list[CaseReport],
    graph: Path,
    opset: int,
    source: Source,
    real: dict[str, np.ndarray] | None,
) -> None:
    """fp32: the first failing case of the first graph that fails is bisected to the module and node."""
    failed = next((i for i, c in enumerate(cases) if not c.ok), None)
    if failed is None or report.divergence is not None or report.budget is not None:
        return
    inputs = make_inputs(plan, plan.cases[failed], seed=failed) if failed < len(plan.cases) else real
    if inputs is not None:
        report.divergence = bisect(plan, graph, inputs, report.tolerance, opset, source.example_dims)
    if report.divergence:
        report.divergence["graph"] = graph.name  # model.onnx, or the .ort file of a mobile bundle


def _graph_line(checked: str, cases: list[CaseReport], report: ParityReport, precision: str) -> str:
    """One graph's verdict: its worst error (fp32), or its worst cosine and top-1 agreement (a budget)."""
    verdict = "ok" if all(c.ok for c in cases) else "FAILED"
    if report.budget is None:
        worst = max((o.max_rel for c in cases for o in c.outputs), default=0.0)
        return (
            f"  {checked}: {len(cases)} shapes, worst error {worst:.2e} of output scale "
            f"({verdict}, tolerance {report.tolerance:g})"
        )
    cosine = min((c.metrics or {}).get("cosine", 1.0) for c in cases)
    real_metrics = [c.metrics for c in cases if c.inputs == "real" and c.metrics and "top1" in c.metrics]
    top1 = ""
    if real_metrics:
        top1 = f", top-1 agreement on the real inputs {min(m['top1'] for m in real_metrics):.4f}"
    budget = f"{precision} budget {report.budget}"
    return f"  {checked}: {len(cases)} shapes, worst cosine {cosine:.5f}{top1} ({verdict}, {budget})"


def _generation_line(g: dict[str, Any], precision: str, budget: dict[str, float] | None) -> str:
    if g["identical"]:
        outcome = "identical"
    elif budget is None:
        outcome = f"DIFFERENT from step {g['first_difference']}"
    else:  # a quantized graph is judged by its budget; exact tokens are for the record
        outcome = f"differ from step {g['first_difference']} (not judged: {precision} is held to its budget)"
    return f"  greedy generation: {g['steps']} tokens x {g['batch']} prompts, {outcome}"


def format_failure(report: ParityReport) -> str:
    if report.budget is not None:
        lines = [f"parity check failed ({report.precision}, budget {report.budget}):"]
        lines += _non_finite_lines(report)
        lines += [f"  {c.graph} {c.dims}: {'; '.join(c.violations)}" for c in report.cases if c.violations]
        return "\n".join(lines[:20])
    lines = [f"parity check failed ({report.precision}, tolerance {report.tolerance:g} of output scale):"]
    lines += _non_finite_lines(report)
    for case in report.cases:
        for o in case.outputs:
            if not o.ok and not o.non_finite:
                lines.append(
                    f"  {case.graph} {case.dims}: {o.name} max abs error {o.max_abs:.3g} "
                    f"(rel {o.max_rel:.3g}, cosine {o.cosine:.6f})"
                )
    if report.generation and not report.generation["identical"]:
        lines.append(f"  greedy tokens differ from step {report.generation['first_difference']}")
    if report.divergence:
        d = report.divergence
        lines.append(
            f"  first divergence ({d['stage']}): torch module '{d['module']}' "
            f"vs ONNX node '{d['node']}' ({d['op_type']}), max abs error {d['max_abs']:.3g}"
        )
    return "\n".join(lines[:20])

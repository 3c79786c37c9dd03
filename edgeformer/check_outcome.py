"""The outcome of ``edgeformer check`` from its report: the lines it says and the error it exits
with. A failed torch parity already raised inside ``verify_bundle.check_bundle``; what is decided
here is the rest: a check without the torch source (``SourcelessReport``), the quantization verdict
the manifest records (re-measured where the bundle keeps its verdict rows), and a budget miss that
was accepted when the bundle was written, which exits 1 unless it is accepted here too."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeformer.errors import EdgeformerError, ParityError
from edgeformer.parity import ParityReport
from edgeformer.quantize.stage import BudgetMissError
from edgeformer.verdict import Verdict
from edgeformer.verify_bundle import SourcelessReport


@dataclass
class Outcome:
    """What check says (``lines``: text and whether it goes to stderr, in order) and the error it
    raises afterwards (None: exit 0)."""

    lines: list[tuple[str, bool]] = field(default_factory=list)
    error: EdgeformerError | None = None

    def say(self, text: str, err: bool = False) -> None:
        self.lines.append((text, err))


def check_outcome(
    report: ParityReport | SourcelessReport, *, require_torch_parity: bool = False, accept_budget_miss: bool = False
) -> Outcome:
    """The lines and exit of a check that returned ``report`` (see ``edgeformer check --help``)."""
    if isinstance(report, SourcelessReport):
        return _sourceless(report, require_torch_parity)
    outcome = Outcome()
    if not report.ok:  # only a bundle whose miss was accepted when written gets here
        outcome.say(f"parity against the torch source on {report.provider}: budget NOT met", err=True)
    elif report.budget is not None:
        outcome.say(
            f"parity ok on {report.provider}: within the {report.precision} budget {report.budget} "
            "against the torch source"
        )
    else:
        worst = report.worst()
        error = worst.max_rel if worst else 0.0
        outcome.say(
            f"parity ok on {report.provider}: worst error {error:.2e} of output scale, tolerance {report.tolerance:g}"
        )
    _recorded(report, accept_budget_miss, outcome)
    return outcome


def _recorded(report: ParityReport, accept: bool, outcome: Outcome) -> None:
    """The quantization verdict recorded in the manifest, and a miss accepted when it was written:
    shown, and exit 1 unless --accept-budget-miss is given to check too."""
    recorded = Verdict.from_dict(report.recorded_verdict) if report.recorded_verdict else None
    rejudged = Verdict.from_dict(report.rejudged_verdict) if report.rejudged_verdict else None
    accepted = report.accepted_budget_miss
    _verdict_lines(recorded, rejudged, report.rejudge_note, outcome)
    verdict = rejudged or recorded  # what check measured itself decides; a bundle without rows: what it records
    if not accepted:
        if verdict is not None and not verdict.ok:
            # a miss nobody accepted: re-measured here, or an edited manifest / another tool's
            said = "the verdict re-measured by check misses" if rejudged else "the manifest records a budget miss"
            outcome.error = BudgetMissError(f"{said} and the miss was not accepted: {verdict.line()}", verdict)
        return
    parity = [f"against torch at {c.dims}: {m}" for c in report.cases for m in c.violations]
    listed = (verdict.misses if verdict else []) + [m for m in accepted.get("misses", []) if isinstance(m, str)]
    missed = "; ".join(dict.fromkeys(listed + parity))
    line = f"budget NOT met (accepted at export: {missed or 'see the manifest'})"
    if accept:
        outcome.say(f"{line}; exit 0 because --accept-budget-miss was given")
    else:
        outcome.error = BudgetMissError(f"{line}; pass --accept-budget-miss to check to accept it here too", verdict)


def _verdict_lines(recorded: Verdict | None, rejudged: Verdict | None, note: str, outcome: Outcome) -> None:
    """The verdict check measured on the bundle's verdict rows, beside the one recorded when written."""
    if rejudged is not None and recorded is not None:
        outcome.say(f"verdict re-measured on the bundle's {rejudged.rows_file}: {rejudged.line()}")
        pairs = [f"{k} {v:.6g} / {recorded.measured[k]:.6g}" for k, v in rejudged.measured.items()
                 if k in recorded.measured]  # fmt: skip
        said = "met" if recorded.ok else "NOT met"
        outcome.say(f"  re-measured / recorded when written ({said}): {', '.join(pairs) or 'no common metric'}")
    elif recorded is not None:
        outcome.say(f"recorded verdict ({note or 'as recorded'}): {recorded.line()}")


def _sourceless(report: SourcelessReport, require_torch_parity: bool) -> Outcome:
    """A check that could not rebuild the torch source: what it checked decides, then whether
    torch parity was required."""
    if not report.ok:
        failed = "; ".join(f"{k}: {v}" for k, v in report.checks.items() if v != "ok" and not v.startswith("none"))
        return Outcome(error=ParityError(f"the bundle failed what could be checked without its torch source: {failed}"))
    if require_torch_parity:
        return Outcome(
            error=ParityError(f"torch parity NOT checked ({report.reason}) and --require-torch-parity was given")
        )
    return Outcome(
        [("bundle ok (files, IO spec, graphs run, finite outputs, recorded parity); torch parity NOT checked", False)]
    )

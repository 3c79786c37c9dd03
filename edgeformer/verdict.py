"""One judge for every verdict: does a bundle meet its tolerance (fp32) or its accuracy budget
(int8, int4, fp16)? ``export``, ``quantize`` and ``check`` all call ``judge``; what each prints and
records comes from the ``Verdict`` it returns (``line`` and ``to_dict``).

A verdict names what it measured, on which rows (``rows``: where they came from and how many) and at
which sequence lengths, on which execution provider, against which bounds, and what was tried to meet
them. A miss is a miss everywhere: the command exits 1 and writes nothing, unless the user accepted
it (``--accept-budget-miss``), which the manifest records and ``check`` shows.

Pure functions over numbers: numpy and the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# metric -> True when higher is better; ``max_rel`` is the fp32 tolerance's metric
HIGHER_IS_BETTER = {"cosine": True, "top1": True, "perplexity": False, "max_rel": False}


@dataclass
class Verdict:
    ok: bool
    precision: str
    measured: dict[str, float]  # every metric measured (cosine, cosine_min, top1, perplexity, max_rel...)
    bounds: dict[str, float]  # the ones judged: the budget, or {"max_rel": tolerance} for fp32
    misses: list[str] = field(default_factory=list)  # "top1 0.9875 < 0.99", one per bound broken
    rows: str = ""  # which rows were judged: "validation: stdlib docstrings, valid split (32 rows of 128 bytes)"
    lengths: list[int] = field(default_factory=list)  # the sequence lengths judged
    provider: str = "CPUExecutionProvider"  # where the graphs ran
    tried: str = ""  # what was done to meet the bounds, e.g. "all int8; then 3 of 42 nodes kept in float"
    accepted: bool = False  # a miss the user accepted (--accept-budget-miss)
    rows_file: str = ""  # the bundle file holding the judged rows, for `check` to judge them again

    @property
    def kind(self) -> str:
        return "tolerance" if "max_rel" in self.bounds else "budget"

    def line(self) -> str:
        """The one-line verdict every command prints."""
        what = f"{self.precision} {self.kind} {_bounds_text(self.bounds)}"
        where = "; ".join(filter(None, [self.rows, _lengths_text(self.lengths), f"on {self.provider}"]))
        if self.ok:
            return f"{self.kind} met ({what}): {_measured_text(self.measured, self.bounds)} ({where})"
        tried = f"; tried: {self.tried}" if self.tried else ""
        head = f"{self.kind} NOT met" + (" (accepted with --accept-budget-miss)" if self.accepted else "")
        return f"{head}: {'; '.join(self.misses)} ({what}; {where}{tried})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "precision": self.precision,
            "kind": self.kind,
            "measured": {k: round(v, 6) for k, v in self.measured.items() if math.isfinite(v)},  # JSON has no NaN
            "bounds": dict(self.bounds),
            "misses": list(self.misses),
            "rows": self.rows,
            "lengths": list(self.lengths),
            "provider": self.provider,
            "tried": self.tried,
            "accepted": self.accepted,
            **({"rows_file": self.rows_file} if self.rows_file else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        """A recorded verdict (a manifest is data: every field is checked, ValueError names the bad one)."""
        if not isinstance(d, dict):
            raise ValueError(f"a verdict must be an object, got {type(d).__name__}")
        numbers = {}
        for key in ("measured", "bounds"):
            value = d.get(key, {})
            if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
                raise ValueError(f"verdict {key} must be an object of numbers")
            numbers[key] = {str(k): float(v) for k, v in value.items()}
        texts = {k: d.get(k, "") for k in ("precision", "rows", "provider", "tried", "rows_file")}
        if not all(isinstance(v, str) for v in texts.values()):
            raise ValueError("verdict precision, rows, provider, tried and rows_file must be strings")
        misses, lengths = d.get("misses", []), d.get("lengths", [])
        if not isinstance(misses, list) or not all(isinstance(m, str) for m in misses):
            raise ValueError("verdict misses must be a list of strings")
        if not isinstance(lengths, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in lengths):
            raise ValueError("verdict lengths must be a list of integers")
        if not isinstance(d.get("ok"), bool) or not isinstance(d.get("accepted", False), bool):
            raise ValueError("verdict ok and accepted must be true or false")
        return cls(d["ok"], texts["precision"], numbers["measured"], numbers["bounds"], misses, texts["rows"],
                   lengths, texts["provider"] or "unknown", texts["tried"], d.get("accepted", False),
                   texts["rows_file"])  # fmt: skip


def misses(measured: dict[str, float], bounds: dict[str, float]) -> list[str]:
    """The bounds ``measured`` breaks, in words. A metric these outputs do not have (top-1 of an
    encoder without logits) is not judged; one measured as NaN or infinite is a miss."""
    out = []
    for name, bound in bounds.items():
        value = measured.get(name)
        higher = HIGHER_IS_BETTER.get(name, True)
        if value is None:
            continue
        if not math.isfinite(value):
            out.append(f"{name} is {value} (not a finite number), bound {bound:g}")
            continue
        if not (value >= bound if higher else value <= bound):
            out.append(f"{name} {_digits(value, bound)} {'<' if higher else '>'} {bound:g}")
    return out


def judge(
    measured: dict[str, float],
    bounds: dict[str, float],
    *,
    precision: str,
    rows: str = "",
    lengths: list[int] | tuple[int, ...] = (),
    provider: str = "CPUExecutionProvider",
    tried: str = "",
    accepted: bool = False,
) -> Verdict:
    """THE judge: ``measured`` against ``bounds`` (a budget, or ``{"max_rel": tolerance}``)."""
    broken = misses(measured, bounds)
    judged = {k: v for k, v in bounds.items() if k in measured}  # what these outputs could be judged by
    return Verdict(not broken, precision, dict(measured), judged, broken, rows,
                   sorted(set(lengths)), provider, tried, accepted and bool(broken))  # fmt: skip


def case_bounds(budget: dict[str, float], kind: str = "random") -> dict[str, float]:
    """The bounds one parity case is judged by: on random tokens a model's logits are near ties that
    say nothing about its task, so there only cosine is judged; the whole budget on real inputs."""
    return dict(budget) if kind == "real" else {k: v for k, v in budget.items() if k == "cosine"}


def judge_case(
    want: dict[str, Any],
    got: dict[str, Any],
    inputs: dict[str, Any],
    budget: dict[str, float],
    *,
    kind: str = "random",
    language_model: bool = False,
) -> tuple[dict[str, float], list[str]]:
    """THE judge of one input case of a reduced-precision graph against its reference outputs (the torch
    source's): the budget metrics (``budget.measure``) and the bounds they break. The final
    parity check (``parity``) and the precision search (``quantize.mixed``) both call it, on the same
    cases and the same reference outputs, so a graph the search accepts is one the check accepts."""
    from edgeformer.budget import measure, to_jsonable

    metrics = to_jsonable(measure([want], [got], [inputs], language_model=language_model and kind == "real"))
    return metrics, misses(metrics, case_bounds(budget, kind))


def combine(verdicts: list[Verdict], *, tried: str = "") -> Verdict:
    """One verdict for several graphs of a bundle: every miss of each, named by graph."""
    if not verdicts:
        raise ValueError("no verdicts to combine")
    first = verdicts[0]
    broken = [m for v in verdicts for m in v.misses]
    measured: dict[str, float] = {}
    for v in verdicts:  # the worst value of each metric over the graphs
        for k, value in v.measured.items():
            higher = HIGHER_IS_BETTER.get(k.removesuffix("_min"), True)
            measured[k] = value if k not in measured else (min if higher else max)(measured[k], value)
    lengths = sorted({n for v in verdicts for n in v.lengths})
    return Verdict(not broken, first.precision, measured, first.bounds, broken, first.rows, lengths,
                   first.provider, tried or first.tried, any(v.accepted for v in verdicts))  # fmt: skip


def provider_note(ran_on: str, wanted: tuple[str, ...] | list[str]) -> str:
    """ "CPUExecutionProvider", or with a note when the target's own provider was not the one used."""
    short = ran_on.removesuffix("ExecutionProvider").lower()
    own = [p for p in wanted if p != "cpu"]
    if own and short not in own:
        return f"{ran_on}; the target's provider {own[0]} is not available here"
    return ran_on


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bounds_text(bounds: dict[str, float]) -> str:
    return ", ".join(f"{k} {'>=' if HIGHER_IS_BETTER.get(k, True) else '<='} {v:g}" for k, v in bounds.items())


def _measured_text(measured: dict[str, float], bounds: dict[str, float]) -> str:
    shown = [k for k in bounds if k in measured] or list(measured)
    return ", ".join(f"{k} {measured[k]:.6g}" for k in shown)


def _lengths_text(lengths: list[int]) -> str:
    if not lengths:
        return ""
    return f"sequence length{'s' if len(lengths) > 1 else ''} {', '.join(map(str, lengths))}"


def _digits(value: float, bound: float) -> str:
    """``value`` with enough digits to differ from ``bound`` (0.9999996 is not "1 < 1")."""
    for digits in (6, 9, 12, 17):
        text = f"{value:.{digits}g}"
        if float(text) != bound:
            return text
    return repr(value)

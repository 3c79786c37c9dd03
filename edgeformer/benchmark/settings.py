"""Settings at work: argparse options generated from the declaration (``options``), the JSON form in
which settings travel to worker processes, and ``resolve``, which fills the sweeps left open to fit
a model and checks every value. Standard library and numpy only (the device runner imports it).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from typing import Any

from edgeformer.benchmark.options import (
    BATCH_LIMIT,
    BUDGET_LIMIT,
    COUNT_LIMIT,
    DEFAULT_NEW_TOKENS,
    DEFAULT_PROMPT,
    DEFAULT_SEQUENCES,
    LOOPS,
    OPTIONS,
    SEED_LIMIT,
    STEP_GRAPH,
    Limits,
    Settings,
    help_text,
)
from edgeformer.benchmark.stats import physical_cores
from edgeformer.runtime.errors import OptionError

# ----- argparse options, from the declaration --------------------------------------------------------


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_argparse_options(
    parser: argparse.ArgumentParser,
    group: str = "settings",
    *,
    switch: bool = True,
    only: Sequence[str] | None = None,
) -> None:
    """The declared options of ``group`` (or of its fields ``only``) on an argparse parser (dest:
    ``Option.dest``); ``switch`` False leaves out on/off flags (``--limits`` in ``limits``, which
    only measures them)."""
    for o in OPTIONS:
        if o.group != group or (o.parse is None and not switch) or (only is not None and o.field not in only):
            continue
        if o.parse is None:
            parser.add_argument(o.flag, dest=o.dest, action=argparse.BooleanOptionalAction, help=help_text(o))
        else:
            parser.add_argument(o.flag, dest=o.dest, type=argparse_type(o.parse), metavar=o.metavar, help=help_text(o))


def values_of(args: argparse.Namespace) -> dict[str, Any]:
    return {o.dest: getattr(args, o.dest, None) for o in OPTIONS}


# ----- JSON: how settings travel to a worker process ----------------------------------------------------


def to_json(settings: Settings, limits: Limits | None = None) -> dict[str, Any]:
    """Settings (and limits) as JSON-able data; ``from_json`` gives them back equal."""
    out: dict[str, Any] = {"settings": asdict(settings)}
    if limits is not None:
        out["limits"] = asdict(limits)
    return out


def from_json(data: Any) -> tuple[Settings, Limits | None]:
    """The settings of ``to_json``; a missing or unknown field, or a value of the wrong kind, is an
    OptionError naming it (values are range-checked by ``resolve``)."""
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise OptionError("benchmark settings must be a JSON object with 'settings'")
    settings = Settings(**_fields(Settings, data["settings"]))
    limits = data.get("limits")
    return settings, None if limits is None else Limits(**_fields(Limits, limits))


def _fields(kind: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise OptionError(f"benchmark {kind.__name__.lower()} must be a JSON object")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise OptionError(f"unknown benchmark setting {unknown[0]!r}")
    out = {}
    for name, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        default = getattr(kind(), name)
        if not _same_kind(value, default, name):
            raise OptionError(f"benchmark setting {name!r} has a value of the wrong kind: {value!r:.60}")
        out[name] = value
    return out


TUPLES = {
    "threads": int,
    "batches": int,
    "sequences": int,
    "prompts": int,
    "new_tokens": int,
    "loops": str,
    "providers": str,
}
OPTIONAL = ("threads", "sequences", "prompts", "new_tokens", "iterations", "time_budget")


def _same_kind(value: Any, default: Any, name: str) -> bool:
    if value is None:
        return name in OPTIONAL
    if name in TUPLES:
        item = TUPLES[name]
        return isinstance(value, tuple) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
    if isinstance(default, bool):
        return isinstance(value, bool)
    number = (int, float) if name == "time_budget" else (int,)
    return isinstance(value, number) and not isinstance(value, bool)


# ----- resolving: the sweeps a model takes ---------------------------------------------------------------


def positive(name: str, values: Sequence[int] | None, minimum: int = 1, maximum: int = COUNT_LIMIT) -> None:
    if values is None:
        return
    if len(values) == 0:
        raise OptionError(f"{name} needs at least one value")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum:
            raise OptionError(f"{name} values must be integers from {minimum} to {maximum:,}, got {v!r:.40}")


def check(settings: Settings) -> None:
    """Every count in range, and loops, iterations and the time budget that can run."""
    for name, flag in (("threads", "--threads"), ("sequences", "--sequence")):
        positive(flag, getattr(settings, name))
    positive("--batch", settings.batches, maximum=BATCH_LIMIT)
    for name, flag in (("prompts", "--prompt"), ("new_tokens", "--new-tokens")):  # () once resolved: none
        positive(flag, getattr(settings, name) or None)
    positive("--warmup", [settings.warmup], 0)
    positive("--gen-warmup", [settings.gen_warmup], 0)
    positive("--gen-runs", [settings.gen_runs])
    positive("--input-seed", [settings.seed], 0, SEED_LIMIT)
    if settings.iterations is not None:
        positive("--iterations", [settings.iterations])
    elif settings.time_budget is None:
        raise OptionError("give a number of iterations, a time budget, or both")
    budget = settings.time_budget
    if budget is not None and not (math.isfinite(budget) and 0 < budget <= BUDGET_LIMIT):
        raise OptionError(f"--time-budget must be a positive number of seconds, got {budget!r}")
    bad = [loop for loop in settings.loops if loop not in LOOPS]
    if bad or not settings.loops:
        raise OptionError(f"--loop takes {' and/or '.join(LOOPS)}, got {','.join(settings.loops) or 'nothing'}")
    if not settings.providers or not all(settings.providers):
        raise OptionError("give at least one execution provider, e.g. cpu")


def resolve(settings: Settings, family: str, config: dict[str, Any]) -> Settings:
    """Concrete sweeps for a model of ``family`` and ``config`` (max_positions): defaults filled in
    to fit, and every value checked (a sequence, prompt or prompt + new tokens longer than the
    model takes is an OptionError naming the limit)."""
    check(settings)
    max_pos = config.get("max_positions")
    if not isinstance(max_pos, int) or isinstance(max_pos, bool) or max_pos < 1:
        max_pos = None
    out = settings
    if settings.threads is None:
        out = replace(out, threads=(physical_cores(),))
    if settings.sequences is None:
        fit = tuple(s for s in DEFAULT_SEQUENCES if max_pos is None or s <= max_pos)
        out = replace(out, sequences=fit or ((max_pos,) if max_pos is not None else ()))
    elif max_pos is not None and max(settings.sequences) > max_pos:
        raise OptionError(f"--sequence {max(settings.sequences)} is longer than the model's max_positions {max_pos}")
    if family not in STEP_GRAPH:
        if settings.prompts or settings.new_tokens:
            raise OptionError(f"a {family} bundle does not generate; leave out --prompt and --new-tokens")
        return replace(out, generate=False, prompts=(), new_tokens=())
    if not settings.generate:
        return replace(out, prompts=(), new_tokens=())
    return _generation_sweeps(out, family, max_pos)


def _generation_sweeps(settings: Settings, family: str, max_pos: int | None) -> Settings:
    prompts = settings.prompts
    if prompts is None:
        prompts = (DEFAULT_PROMPT if max_pos is None or max_pos > DEFAULT_PROMPT else max(1, max_pos // 4),)
    if max_pos is not None and max(prompts) > max_pos - (family == "decoder"):
        raise OptionError(f"--prompt {max(prompts)} leaves no room in the model's max_positions {max_pos}")
    new = settings.new_tokens
    room = None if max_pos is None else (max_pos - max(prompts) if family == "decoder" else max_pos)
    if new is None:
        new = (DEFAULT_NEW_TOKENS if room is None else min(DEFAULT_NEW_TOKENS, room),)
    elif room is not None and max(new) > room:
        what = f"a {max(prompts)}-token prompt plus " if family == "decoder" else ""
        raise OptionError(
            f"{what}--new-tokens {max(new)} exceeds the model's max_positions {max_pos}; lower --new-tokens"
        )
    return replace(settings, prompts=tuple(prompts), new_tokens=tuple(new))

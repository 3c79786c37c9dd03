"""The ONE declaration of what a benchmark measures: ``Settings``, ``Limits`` and their options.

``OPTIONS`` declares each field's command-line option once: flag, parser, range, default and help.
The device runner's argparse options (``settings.add_argparse_options``) and ``edgeformer bench``'s
click options (``edgeformer.cli``) are both generated from it; a worker process receives settings
as JSON (``settings.to_json``), never as argv. Standard library only, so the CLI can import it
without numpy or onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeformer.numbers import COUNT_LIMIT  # any count of a sweep (threads: bounded by the session)

LOOPS = ("runtime", "bare")
DEFAULT_SEQUENCES = (8, 32, 128)
DEFAULT_PROMPT, DEFAULT_NEW_TOKENS = 32, 128
DEFAULT_ITERATIONS = 20
FORWARD_GRAPH = {"encoder": "model", "decoder": "model", "encoder-decoder": "encoder"}
STEP_GRAPH = {"decoder": "model", "encoder-decoder": "decoder"}  # the graph that runs once per new token
BATCH_LIMIT = 4096  # a batch of random inputs is allocated whole
SEED_LIMIT = 2**64 - 1
BUDGET_LIMIT = 86400.0  # seconds per case


@dataclass(frozen=True)
class Settings:
    """What to measure. ``None`` sweeps take defaults that fit the model (see ``resolve``)."""

    threads: tuple[int, ...] | None = None  # None: the physical cores this process may use
    batches: tuple[int, ...] = (1,)
    sequences: tuple[int, ...] | None = None  # forward cases; None: 8, 32, 128 up to max_positions
    prompts: tuple[int, ...] | None = None  # generation; None: 32 (a quarter of max_positions if less)
    new_tokens: tuple[int, ...] | None = None  # None: 128, or what fits after the prompt
    warmup: int = 3  # forward calls before timing
    iterations: int | None = DEFAULT_ITERATIONS  # timed forward calls per case (None: until the time budget)
    time_budget: float | None = None  # seconds per case; stops a case early
    gen_warmup: int = 1  # generation runs (per loop) before timing
    gen_runs: int = 3  # timed generation runs per loop and case
    loops: tuple[str, ...] = LOOPS
    forward: bool = True
    generate: bool = True
    spinning: bool = True
    providers: tuple[str, ...] = ("cpu",)  # execution providers of the bundle's sessions (limits: always CPU)
    seed: int = 0  # of the random inputs


@dataclass(frozen=True)
class Limits:
    """The limits measurement: off, or its sizes."""

    enabled: bool = True
    matmul_size: int = 1024
    bandwidth_mb: int = 256


# ----- parsing one option's text ---------------------------------------------------------------------


def ints(low: int, high: int) -> Callable[[str], tuple[int, ...]]:
    """``"1,2,4"`` -> (1, 2, 4), each from ``low`` to ``high``; a ValueError names the bad value."""

    def parse(text: str) -> tuple[int, ...]:
        values = []
        for part in text.split(","):
            try:
                value = int(part.strip())
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not an integer (give a comma-separated list)") from None
            if not low <= value <= high:
                raise ValueError(f"{value} is not an integer from {low} to {high:,}")
            values.append(value)
        return tuple(values)

    return parse


def count(low: int, high: int) -> Callable[[str], int]:
    """One integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is not an integer from {low} to {high:,}")
        return value

    return parse


def seconds(text: str) -> float:
    """A finite, positive number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number of seconds")
    if not 0 < value <= BUDGET_LIMIT:
        raise ValueError(f"{text} is not a number of seconds above 0 and at most {BUDGET_LIMIT:.0f}")
    return value


def names(text: str) -> tuple[str, ...]:
    """Comma-separated names, at least one."""
    found = tuple(p.strip() for p in text.split(",") if p.strip())
    if not found:
        raise ValueError("give at least one name, e.g. cpu")
    return found


def loops(text: str) -> tuple[str, ...]:
    """Generation loops: ``runtime`` and/or ``bare``."""
    found = tuple(p.strip() for p in text.split(",") if p.strip())
    if not found or any(p not in LOOPS for p in found):
        raise ValueError(f"loops are {' and '.join(LOOPS)}, got {text!r}")
    return found


# ----- the declaration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting's command-line option. ``switch``: a flag pair ``--x/--no-x``; ``default_text``:
    the default shown in help where the value is resolved later (``None`` in the dataclass)."""

    field: str
    flag: str
    help: str
    parse: Callable[[str], Any] | None = None  # None: a switch
    default_text: str | None = None
    metavar: str | None = None
    group: str = "settings"  # or "limits": the field of ``Limits``

    @property
    def switch(self) -> bool:
        return self.parse is None

    @property
    def dest(self) -> str:
        """The option's name in parsed values (``--new-tokens``: ``new_tokens``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def default(self) -> Any:
        return getattr(Limits() if self.group == "limits" else Settings(), self.field)


OPTIONS: tuple[Option, ...] = (
    Option("threads", "--threads", "Intra-op thread counts, e.g. 1,2.", ints(1, COUNT_LIMIT), "physical cores", "N,.."),
    Option("batches", "--batch", "Batch sizes.", ints(1, BATCH_LIMIT), metavar="N,.."),
    Option("sequences", "--sequence", "Forward sequence lengths.", ints(1, COUNT_LIMIT), "8,32,128 that fit", "N,.."),
    Option("prompts", "--prompt", "Generation prompt lengths.", ints(1, COUNT_LIMIT), "32", "N,.."),
    Option("new_tokens", "--new-tokens", "Tokens to generate.", ints(1, COUNT_LIMIT), "128, or what fits", "N,.."),
    Option("warmup", "--warmup", "Untimed forward calls per case.", count(0, 10**6), metavar="N"),
    Option(
        "iterations", "--iterations", "Timed forward calls per case.", count(1, 10**7), "20, none with a budget", "N"
    ),
    Option(
        "time_budget", "--time-budget", "Seconds per case; a case stops when it is spent.", seconds, metavar="SECONDS"
    ),
    Option("gen_warmup", "--gen-warmup", "Untimed generations per loop and case.", count(0, 10**6), metavar="N"),
    Option("gen_runs", "--gen-runs", "Timed generations per loop and case.", count(1, 10**6), metavar="N"),
    Option("loops", "--loop", "ONNX generation loops: runtime, bare.", loops, metavar="runtime,bare"),
    Option("forward", "--forward", "Measure forward passes."),
    Option("generate", "--generate", "Measure generation (decoders)."),
    Option("spinning", "--spinning", "Idle intra-op threads spin (off: they sleep)."),
    Option("providers", "--providers", "Where the ONNX graphs run.", names, metavar="NAMES"),
    Option("seed", "--input-seed", "Seed of the random inputs, 0 to 2**64-1.", count(0, SEED_LIMIT), metavar="N"),
    Option("enabled", "--limits", "Measure the machine's MatMul peak and bandwidth.", group="limits"),
    Option("matmul_size", "--limits-matmul", "N of the N x N MatMuls.", count(16, 16384), metavar="N", group="limits"),
    Option(
        "bandwidth_mb",
        "--limits-mb",
        "MB of fp32 weights the bandwidth test reads.",
        count(1, 1 << 16),
        metavar="MB",
        group="limits",
    ),
)


def option(field: str, group: str = "settings") -> Option:
    return next(o for o in OPTIONS if o.field == field and o.group == group)


def _given(values: dict[str, Any], group: str) -> dict[str, Any]:
    return {o.field: values[o.dest] for o in OPTIONS if o.group == group and values.get(o.dest) is not None}


def settings_from_values(values: dict[str, Any]) -> Settings:
    """Settings from parsed option values by ``dest`` (absent or None: the default); without
    ``--iterations`` a time budget alone bounds a case."""
    given = _given(values, "settings")
    if "iterations" not in given and given.get("time_budget") is not None:
        given["iterations"] = None
    return Settings(**given)


def limits_from_values(values: dict[str, Any]) -> Limits:
    return Limits(**_given(values, "limits"))


def help_text(o: Option) -> str:
    if o.switch:
        return o.help
    shown = o.default_text or (None if o.default() is None else value_text(o.default()))
    return o.help + (f" (default: {shown})" if shown else "")


def value_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

"""The options several commands share, and click parameter types for numbers from the command
line: finite, and bounded on both sides.

``click.FloatRange`` lets ``nan`` through (every comparison with NaN is false) and ``inf`` when no
maximum is set; a NaN time budget or threshold would silently disable what it bounds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from edgeformer.numbers import COUNT_LIMIT  # steps, sequence lengths, sizes: beyond any model edgeformer builds


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that refuses NaN and the infinities."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def count(low: int, high: int = COUNT_LIMIT) -> click.IntRange:
    """An integer option from ``low`` to ``high`` (both included)."""
    return click.IntRange(low, high)


SEED_LOW, SEED_HIGH = -(2**63), 2**64 - 1  # what torch.manual_seed takes


class SeedRange(click.IntRange):
    """A 64-bit seed; help and errors say the bounds as powers of two, not as 20-digit numbers."""

    name = "seed"

    def __init__(self) -> None:
        super().__init__(SEED_LOW, SEED_HIGH)

    def _describe_range(self) -> str:
        return "-2**63 to 2**64-1"


WEIGHTS_SEED_HELP = "Seed of the random weights of a card without a checkpoint (or of a factory's module)."


def seed_option(help_text: str = WEIGHTS_SEED_HELP, default: int | None = 0) -> Any:
    """``--seed``, with one type and range in every command (and one meaning wherever it seeds weights)."""
    return click.option(
        "--seed",
        type=SeedRange(),
        default=default,
        show_default=default is not None,
        metavar="INTEGER",
        help=help_text,
    )


def split_names(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...] | None:
    """A comma-separated list option (``--providers cuda,cpu``) as a tuple; repeating the option
    also works (``--providers cuda --providers cpu``)."""
    if value is None or value == ():
        return None
    items = value if isinstance(value, (tuple, list)) else (value,)
    names = tuple(n.strip() for item in items for n in str(item).split(",") if n.strip())
    if not names:
        raise click.BadParameter("name at least one, e.g. cuda,cpu", ctx=ctx, param=param)
    return names


PROVIDERS_HELP = (
    "Execution providers, comma-separated in order of preference (cpu, cuda, tensorrt, xnnpack, ...), e.g. cuda,cpu."
)


def providers_option(help_text: str, default: str | None = None) -> Any:
    """``--providers`` in every command that runs graphs; ``--provider`` is a hidden, deprecated alias."""

    def decorate(f: Any) -> Any:
        f = click.option("--provider", "provider_alias", multiple=True, hidden=True, callback=split_names)(f)
        return click.option(
            "--providers",
            "providers",
            multiple=True,
            callback=split_names,
            metavar="NAMES",
            help=f"{PROVIDERS_HELP} {help_text}" + (f"  [default: {default}]" if default else ""),
        )(f)

    return decorate


def merge_providers(providers: tuple[str, ...] | None, alias: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The providers named by ``--providers`` and the deprecated ``--provider`` (with a note)."""
    if alias:
        click.echo("note: --provider is deprecated; use --providers (comma-separated, e.g. cuda,cpu)", err=True)
    if providers and alias:
        raise click.UsageError("give --providers once (comma-separated), not together with --provider")
    return providers or alias or None


def reduced_precision_options(fn: Any) -> Any:
    """--verbose and --accept-budget-miss, shared by export and quantize."""
    fn = click.option(
        "--accept-budget-miss",
        is_flag=True,
        help="Write the bundle even when it misses its accuracy budget (otherwise: exit 1, nothing written); "
        "the manifest records the miss and `edgeformer check` shows it.",
    )(fn)
    return click.option(
        "--verbose", is_flag=True, help="Show onnxruntime's quantizer and calibrator messages (on stderr)."
    )(fn)


def json_option(help_text: str) -> Any:
    """``--json`` (the ``as_json`` flag): what the command prints as JSON instead of its text."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def force_option(help_text: str) -> Any:
    """``--force``: what an existing output the command may replace (each command says which)."""
    return click.option("--force", is_flag=True, help=help_text)


def output_option(help_text: str, *, dest: str = "output", dir_okay: bool = True, file_okay: bool = True) -> Any:
    """``-o/--output``: where the command writes."""
    kind = click.Path(dir_okay=dir_okay, file_okay=file_okay, path_type=Path)
    return click.option("-o", "--output", dest, type=kind, help=help_text)


def check_option(help_text: str) -> Any:
    """``--check/--no-check`` (default on): parity checked when exporting."""
    return click.option("--check/--no-check", default=True, show_default=True, help=help_text)


MEMORY_CHECK_HELP = (
    "Refuse, before building the model, a card whose estimated peak memory exceeds what the machine has."
)


def memory_check_option(help_text: str = MEMORY_CHECK_HELP) -> Any:
    """``--memory-check/--no-memory-check`` (default on): a model too large for this machine refused early."""
    return click.option("--memory-check/--no-memory-check", default=True, show_default=True, help=help_text)


def max_sequence_option(help_text: str) -> Any:
    """``--max-sequence``: parity checked up to this length instead of the card's maximum."""
    return click.option("--max-sequence", type=count(2), help=help_text)


def calibration_option(help_text: str) -> Any:
    """``--calibration``: real inputs for a quantizer (an .npz, or text for byte-level models)."""
    return click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), help=help_text)


def progress(msg: str) -> None:
    """A library's progress line, on stderr."""
    click.echo(msg, err=True)


def quantizer_verbose(verbose: bool) -> None:
    """--verbose: onnxruntime's quantizer may speak (on stderr) until this command ends."""
    if verbose:
        from edgeformer.quantize.int8 import VERBOSE

        token = VERBOSE.set(True)
        click.get_current_context().call_on_close(lambda: VERBOSE.reset(token))

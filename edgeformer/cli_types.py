"""Click parameter types for numbers from the command line: finite, and bounded on both sides.

``click.FloatRange`` lets ``nan`` through (every comparison with NaN is false) and ``inf`` when no
maximum is set; a NaN time budget or threshold would silently disable what it bounds.
"""

from __future__ import annotations

import math
from typing import Any

import click

COUNT_LIMIT = 1 << 20  # steps, sequence lengths, sizes: beyond any model edgeformer builds


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

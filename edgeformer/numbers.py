"""One rule for "a finite number", shared by every range check (cards, training recipes, budgets,
sampling options). Standard library only: the device runtime uses it too."""

from __future__ import annotations

import math
from typing import TypeGuard

COUNT_LIMIT = 1 << 20  # steps, sequence lengths, sizes, sweep counts: beyond any model edgeformer builds


def finite_number(value: object) -> TypeGuard[int | float]:
    """An int or float (not a bool) that is finite as a float: NaN, the infinities and integers
    too large for a float (``10**400``, which ``math.isfinite`` cannot even convert) are not."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False

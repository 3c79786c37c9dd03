"""The one place the CLI turns the library's typed errors into click messages (no traceback)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from edgeformer.errors import EdgeformerError


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's typed errors into click messages (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeformerError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper

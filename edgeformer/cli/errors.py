"""The one place the CLI turns the library's typed errors into click messages (no traceback).

Typed errors (``EdgeformerError``) are the rule: the library names what was wrong. A few failures
come from the machine rather than from edgeformer's checks (a disk full or read-only, a path the
system refuses, memory exhausted) and are also turned into one-paragraph messages here, as the last
resort; everything else (a bug, an exception deep inside torch or onnx) keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any

import click

from edgeformer.errors import EdgeformerError, UsageError

ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere (-o)",
    errno.EDQUOT: "free some space or write elsewhere (-o)",
    errno.EROFS: "the file system is read-only: write elsewhere (-o)",
    errno.EACCES: "check the permissions, or write elsewhere (-o)",
    errno.EPERM: "check the permissions, or write elsewhere (-o)",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: check the path",
    errno.EISDIR: "it is a directory: give a file path",
    errno.EEXIST: "it already exists: move it or choose another path",
}


def shorten(path: object, keep: int = 100) -> str:
    """A path for a message: whole when short, else its start and end around an ellipsis."""
    text = str(path)
    return text if len(text) <= keep else f"{text[: keep // 2]}...{text[-(keep // 2) :]} ({len(text)} characters)"


def os_message(exc: OSError) -> str:
    """An OSError as one line: what failed, on which path, and what to do."""
    reason = exc.strerror or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(shorten(p) for p in paths)
    advice = ADVICE.get(exc.errno or 0, "check the path, the disk and the permissions")
    subject = f"cannot use {where}" if where else "a file operation failed"
    return f"{subject}: {reason}; {advice}"


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's typed errors, and the machine's refusals (OSError, MemoryError,
    RecursionError), into click messages (exit code 1, no traceback); a ``UsageError`` is a
    usage error (exit code 2), as click's own."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:  # options that contradict each other: a usage error (exit 2)
            if exc.param_hint is not None:
                raise click.BadParameter(str(exc), param_hint=exc.param_hint) from None
            raise click.UsageError(str(exc)) from None
        except EdgeformerError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(os_message(exc)) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory: the machine could not allocate what this step needs; close other programs, "
                "use a smaller model or input, or a machine with more memory"
            ) from None
        except RecursionError:
            raise click.ClickException(
                "an input nests too deeply to be read (Python's recursion limit): it is not a file edgeformer wrote"
            ) from None

    return wrapper

"""Where a command's output may go relative to its input (fuse and quantize read one bundle or
graph and write another): never into the input, never over it, never over a folder that holds it.

Paths are compared resolved, so ``.`` run inside a bundle, ``bundle/`` with a trailing slash and
``../bundle`` from inside it all name the same directory.
"""

from __future__ import annotations

from pathlib import Path

from edgeformer.errors import EdgeformerError


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return path.absolute()


def default_output(source: Path, suffix: str) -> Path:
    """``<source>-<suffix>`` beside ``source``; for ``.`` or ``..`` (a command run inside a bundle),
    beside the directory they name, e.g. ``fuse .`` in ``gpt-mini/`` writes ``../gpt-mini-fused``."""
    if source.name in ("", ".", ".."):
        source = _resolved(source)
        if not source.name:  # the file system's root
            raise EdgeformerError(f"{source} has no name to derive an output name from; give -o/--output")
    return source.with_name(f"{source.name}-{suffix}")


def refuse_overlap(source: Path, output: Path, error: type[EdgeformerError]) -> None:
    """Raise ``error`` when writing ``output`` would write into, over, or around ``source``."""
    src, out = _resolved(source), _resolved(output)
    if out == src:
        raise error(f"the output {output} is the input {source}; give another -o/--output")
    if src in out.parents:
        raise error(
            f"the output {output} is inside the input {source}; give an -o/--output outside it "
            "(a bundle holds only the files its manifest lists)"
        )
    if out in src.parents:
        raise error(f"the output {output} holds the input {source}; give another -o/--output")

"""Kill a command at a moment of choice and judge what it left: for tests of atomic outputs.

    result = run_and_kill([...], after=2.0)                          # SIGKILL 2 s after the start
    result = run_and_kill([...], at_point="atomic_dir:complete")     # SIGKILL exactly there
    result = run_and_kill([...], stops={"export:graph-saved": look}, at_point="atomic_dir:exchanged")
    state = bundle_state(out, old_files)                 # "old" or "new", else AssertionError
    state = file_state(out, old_bytes, valid=json.loads) # result files (bench reports, cards)

Named points are ``edgeformer.io.pause_point`` calls: the process stops there and says so in a
signal file, so the moment is exact, not a race. At a kill point the harness sends SIGKILL; at a
stop it runs a check while the process waits (what a kill there would leave: SIGKILL runs no
clean-up code), then lets it go on. ``name:file`` limits a point to one output file. Points in the
library today: ``export:graph-saved`` (a graph written into the temporary directory),
``atomic_dir:complete`` (the new directory complete, nothing replaced yet),
``atomic_dir:exchanged`` (replaced, the old one not yet removed), ``atomic_dir:between-renames``
(the fallback without renameat2, between its two renames), ``atomic_path:complete`` (a file
complete under its temporary name).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformer.io import PAUSE_AT, PAUSE_SIGNAL

EDGEFORMER = [sys.executable, "-m", "edgeformer.cli"]
NO_EXCHANGE = [sys.executable, "-c", "import edgeformer.io as io; io.exchange = lambda a, b: False; "
               "from edgeformer.cli import main; main()"]  # fmt: skip


@dataclass
class Killed:
    killed: bool  # False: the command ended by itself before the moment came
    paused_at: str  # the named point it was killed at ("" for a timed kill)
    stops: list[str]  # the points it paused at on the way (and went on from)
    seconds: float  # from the start to the kill (or to the end)
    returncode: int
    log: str  # what the command printed


def run_and_kill(
    args: list[str],
    *,
    after: float | None = None,
    at_point: str | None = None,
    stops: dict[str, Callable[[], None]] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300.0,
) -> Killed:
    """Run ``args``; SIGKILL it ``after`` seconds, or when it reaches the pause point ``at_point``.

    At each point named in ``stops`` the command is held while the given function looks at the
    outputs (what a kill there would leave, since SIGKILL runs no clean-up), then goes on.
    Points take the form ``name`` or ``name:file`` (only where that file is written)."""
    stops = stops or {}
    with tempfile.TemporaryDirectory(prefix="edgeformer-kill-") as scratch:
        signal_file = Path(scratch) / "paused"
        log_file = Path(scratch) / "log"
        full_env = {**os.environ, **(env or {})}
        points = [*stops, *([at_point] if at_point else [])]
        if points:
            full_env.update({PAUSE_AT: ",".join(points), PAUSE_SIGNAL: str(signal_file)})
        start = time.monotonic()
        passed: list[str] = []
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(args, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            killed, paused = False, ""
            try:
                while proc.poll() is None:
                    elapsed = time.monotonic() - start
                    reached = _reached(signal_file)
                    if reached and reached == at_point:
                        proc.send_signal(signal.SIGKILL)
                        killed, paused = True, at_point
                        break
                    if reached:
                        stops[reached]()
                        passed.append(reached)
                        signal_file.unlink()  # go on
                        continue
                    if after is not None and elapsed >= after:
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                        break
                    if elapsed > timeout:
                        raise AssertionError(f"{args} ran for more than {timeout} s without reaching {at_point}")
                    time.sleep(0.02)
            finally:
                if proc.poll() is None and not killed:
                    proc.kill()
            returncode = proc.wait()
        text = log_file.read_text(errors="replace")
        return Killed(killed, paused, passed, time.monotonic() - start, returncode, text)


def _reached(signal_file: Path) -> str:
    try:
        return signal_file.read_text().split()[1]
    except (FileNotFoundError, IndexError):
        return ""  # not paused (or the line is being written)


def temporaries(path: Path) -> list[Path]:
    """The hidden temporary siblings of ``path`` (``.<name>.<pid>.<random>.tmp|.old``)."""
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def bundle_state(path: Path, old_files: dict[str, str]) -> str:
    """``path`` must be a complete bundle (every file present and matching its sha256): the old
    one ("old": the same files and digests) or a new one ("new")."""
    from edgeformer.runtime.bundle import read_bundle

    assert path.is_dir(), f"{path} is missing: neither the old bundle nor the new one"
    bundle = read_bundle(path, verify=True)  # raises on a half-written or mixed bundle
    files = bundle.manifest["files"]
    extra = sorted({p.name for p in path.iterdir()} - set(files) - {"manifest.json", "manifest.sha256"})
    assert not extra, f"{path} holds files its manifest does not list: {extra}"
    return "old" if files == old_files else "new"  # a mix of the two would fail its sha256 checks


def file_state(path: Path, old: bytes, valid: Callable[[bytes], Any]) -> str:
    """``path`` must hold the old bytes ("old") or a complete new file that ``valid`` accepts ("new")."""
    assert path.is_file(), f"{path} is missing: neither the old file nor the new one"
    data = path.read_bytes()
    if data == old:
        return "old"
    valid(data)
    return "new"

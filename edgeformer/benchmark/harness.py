"""The one process harness: measurements in worker processes of their own, JSON in and out.

A worker is ``python -P ...`` (``-P``: its ``sys.path`` does not start with the working directory,
which may be a bundle or any folder holding a module named like one edgeformer imports; this
edgeformer is found through ``PYTHONPATH``, the folder it was imported from). It answers requests,
one JSON line each, after a first line ``ready``:

    driver                              worker (``serve(handle)``)
    Worker(argv) ───── start ─────────▶ (imports, loads)        ──▶ "ready"
    worker.call(request, timeout) ────▶ handle(request) -> dict ──▶ {"ok": {...}} | {"error": "..."}

A request that gets no answer within its timeout stops the worker; a worker that dies, or answers
an error, is a ``WorkerError`` holding its message (or the tail of its stderr). The worker's own
stdout is its stderr, so a library that prints cannot garble the answers. ``run_job`` is one
request in a fresh worker. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from edgeformer.errors import EdgeformerError

READY = "ready"
HOME = str(Path(__file__).resolve().parent.parent.parent)  # the folder holding this edgeformer package


class WorkerError(EdgeformerError):
    """A worker process failed: it did not start, died, answered an error, or ran past its timeout."""


def python_command(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``python -P *argv`` and its environment: this edgeformer first on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [HOME, os.environ.get("PYTHONPATH")]))}
    return [sys.executable, "-P", *argv], env


class Worker:
    """A worker process serving JSON requests (see the module docstring)."""

    def __init__(self, argv: Sequence[str], *, what: str = "worker", timeout: float | None = None) -> None:
        self.what = what
        cmd, env = python_command(argv)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self._next_line(timeout, "start") != READY:
            raise self._failed("did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output: the process is gone

    def _next_line(self, timeout: float | None, doing: str) -> str:
        try:
            return self._lines.get(timeout=timeout).strip()
        except queue.Empty:
            self.kill()
            raise WorkerError(f"{self.what} gave no answer within {timeout:g} s ({doing}); stopped it") from None

    def call(self, request: dict[str, Any], timeout: float | None = None) -> Any:
        """Send ``request``; its answer (a JSON value), or a WorkerError."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise self._failed("could not be sent a request") from None
        line = self._next_line(timeout, "measuring")
        if not line:
            raise self._failed("died")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.what} failed: {answer['error']}")
        return answer["ok"]

    def _failed(self, how: str) -> WorkerError:
        status = self.proc.wait()
        self._stderr.seek(0)
        tail = "\n".join(self._stderr.read().decode(errors="replace").strip().splitlines()[-8:])
        return WorkerError(f"{self.what} {how} (exit status {status}):\n{tail}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """End the worker (its stdin closes, it returns) and wait for it."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):  # a worker that is gone
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        self._stderr.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_job(argv: Sequence[str], request: dict[str, Any], *, what: str, timeout: float | None = None) -> Any:
    """One request in a fresh worker: its answer, or a WorkerError."""
    with Worker(argv, what=what, timeout=timeout) as worker:
        return worker.call(request, timeout)


# ----- the worker's side ---------------------------------------------------------------------------------


def serve(handle: Callable[[dict[str, Any]], Any], errors: tuple[type[BaseException], ...] = (EdgeformerError,)) -> int:
    """Answer requests from stdin until it closes: ``{"ok": handle(request)}``, or ``{"error": message}``
    for the exceptions in ``errors`` (any other is a crash: a traceback on stderr, exit status 1)."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what anything else prints goes to stderr
    answers.write(READY + "\n")
    answers.flush()
    for line in sys.stdin:
        try:
            answer = {"ok": handle(json.loads(line))}
        except errors as exc:
            answer = {"error": str(exc)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0

"""Timing: progress lines on stderr, and the clock around the calls being measured. Standard library only."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

# ----- progress on stderr ----------------------------------------------------------------------------


class Progress:
    """One line per case on stderr; on a terminal it counts the iterations in place."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, prefix: str = "bench") -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.prefix = prefix
        self.text, self.count, self.started, self.shown = "", 0, 0.0, 0.0
        self.total: int | None = None

    def case(self, text: str, total: int | None) -> None:
        self.text, self.total, self.count = text, total, 0
        self.started = self.shown = time.perf_counter()
        if self.enabled and not self.tty:
            self.stream.write(f"[{self.prefix}] {text}\n")
            self.stream.flush()

    def tick(self) -> None:
        self.count += 1
        now = time.perf_counter()
        if self.tty and now - self.shown > 0.1:
            self.shown = now
            of = f"/{self.total}" if self.total else ""
            self.stream.write(f"\r[{self.prefix}] {self.text}: {self.count}{of} ({now - self.started:.1f} s)\033[K")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            took = time.perf_counter() - self.started
            self.stream.write(f"\r[{self.prefix}] {self.text}: {self.count} in {took:.1f} s\033[K\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"[{self.prefix}] {text}\n")
            self.stream.flush()


# ----- timing ------------------------------------------------------------------------------------------


def clock_runs(iterations: int | None, budget: float | None) -> Iterator[int]:
    """0, 1, 2, ... until ``iterations`` are done or ``budget`` seconds have passed (at least one)."""
    start = time.perf_counter()
    i = 0
    while True:
        yield i
        i += 1
        if iterations is not None and i >= iterations:
            return
        if budget is not None and time.perf_counter() - start >= budget:
            return


def time_calls(
    fn: Callable[[], Any], warmup: int, iterations: int | None, budget: float | None, progress: Progress
) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls; the garbage collector waits."""
    for _ in range(warmup):
        fn()
    samples = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in clock_runs(iterations, budget):
            t0 = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - t0) / 1e9)
            progress.tick()
    finally:
        if enabled:
            gc.enable()
    return samples

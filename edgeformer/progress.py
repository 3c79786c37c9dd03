"""Progress on long work: after each step, a line with the steps done and an estimate of the time
left from the steps so far ("model.onnx: case 3/10 done (batch 2, sequence 7), 4.1 s so far, ~9 s
left"). Quiet while the work is short, so a small model's export prints no more than before."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

QUIET_FOR = 2.0  # seconds: work that has taken less so far prints no progress line


@dataclass
class Progress:
    """``step(label)`` after each of ``total`` steps of ``what`` (e.g. "model.onnx: case")."""

    what: str
    total: int
    log: Callable[[str], None]
    quiet_for: float = field(default_factory=lambda: QUIET_FOR)
    started: float = field(default_factory=lambda: time.perf_counter())
    done: int = 0

    def step(self, label: str = "") -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        if elapsed < self.quiet_for or self.done >= self.total:  # the last step: the stage's own line says it
            return
        left = elapsed / self.done * (self.total - self.done)
        about = f" ({label})" if label else ""
        self.log(f"  {self.what} {self.done}/{self.total} done{about}, {elapsed:.1f} s so far, ~{left:.0f} s left")

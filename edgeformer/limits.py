"""Will an export fit in memory? An estimate from the model card alone, checked before any weight
is allocated or traced, so a card too large for the machine is refused with numbers instead of
being killed by the kernel twenty minutes in.

The estimate is a sum of what grows with the card, each term times a factor fitted (non-negative
least squares) to the peak resident memory of the full-size exports in docs/performance.md
("Exporting the full-size cards": bert-base 3.1 GB ... gpt-xl-2048 23.3 GB, traced, fused and checked at full length)::

    peak = 1.13 GB                                   Python, torch, onnxruntime, the exporter
         + 2.41 x weights (parameters x 4 bytes)     torch model, traced graph, ONNX file, sessions
         + 2.84 x attention scores, batch 2 at the longest checked sequence (2 x heads x T x T x 4)
         + 9.47 x logits, batch 2 at T (2 x T x vocab x 4), language-model heads only

The last two come from the parity check (torch and onnxruntime, every checked shape), so they
shrink with ``--max-sequence`` and vanish with ``--no-check``. On the eight measured cards the fit
is within 0.85 GB of the measured peak (gpt-xl-2048: 23.1 GB estimated, 23.3 GB measured;
sparse-decoder-base at 4096: 20.4 vs 20.3; bert-base 2.2 vs 3.1).

Available memory is ``MemAvailable`` from /proc/meminfo, lowered to what a cgroup (container)
limit leaves; ``os.sysconf`` elsewhere. Where neither is known the check is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeformer.config import ModelConfig
from edgeformer.errors import ResourceError

BASE_BYTES = 1.13e9
WEIGHT_FACTOR = 2.41
ATTENTION_FACTOR = 2.84
LOGITS_FACTOR = 9.47
CHECK_BATCH = 2  # the parity check's largest batch (edgeformer.export.graphs.card_cases)
FLOAT_BYTES = 4  # the torch source is fp32 whatever the target precision


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the model a config describes, counted on the meta device (no memory used)."""
    import torch

    from edgeformer.nn.models import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


@dataclass(frozen=True)
class MemoryEstimate:
    """The terms of an export's estimated peak memory, in bytes."""

    parameters: int
    weight_bytes: int
    sequence: int  # the longest sequence the parity check runs (0: no parity check)
    attention_bytes: int
    logits_bytes: int

    @property
    def total(self) -> int:
        return int(
            BASE_BYTES
            + WEIGHT_FACTOR * self.weight_bytes
            + ATTENTION_FACTOR * self.attention_bytes
            + LOGITS_FACTOR * self.logits_bytes
        )

    def describe(self) -> str:
        terms = [
            f"{_gb(BASE_BYTES)} base",
            f"{_count(self.parameters)} parameters x {FLOAT_BYTES} bytes = {_gb(self.weight_bytes)} x {WEIGHT_FACTOR}",
        ]
        if self.sequence:
            terms.append(f"attention at sequence {self.sequence} {_gb(self.attention_bytes)} x {ATTENTION_FACTOR}")
            if self.logits_bytes:
                terms.append(f"logits {_gb(self.logits_bytes)} x {LOGITS_FACTOR}")
        return f"about {_gb(self.total)} ({' + '.join(terms)})"


def estimate_export_memory(
    cfg: ModelConfig, *, max_sequence: int | None = None, parity: bool = True, parameters: int | None = None
) -> MemoryEstimate:
    """The estimated peak memory of exporting (and, with ``parity``, checking) a model of ``cfg``."""
    params = parameter_count(cfg) if parameters is None else parameters
    longest = min(cfg.max_positions, max_sequence or cfg.max_positions) if parity else 0
    heads = cfg.n_heads
    attention = CHECK_BATCH * heads * longest * longest * FLOAT_BYTES
    logits = CHECK_BATCH * longest * cfg.vocab_size * FLOAT_BYTES if cfg.head == "lm" else 0
    return MemoryEstimate(params, params * FLOAT_BYTES, longest, attention, logits)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room(root: Path) -> int | None:
    """What a cgroup memory limit leaves (v2 memory.max, or v1 memory.limit_in_bytes); None when unlimited."""
    for limit_file, usage_file in (
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            return max(limit - usage, 0)
    return None


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process can still allocate without swapping or being killed; None when unknown."""
    found = _meminfo_available(meminfo)
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    room = _cgroup_room(cgroup)
    if room is not None:
        found = room if found is None else min(found, room)
    return found


def check_export_memory(
    cfg: ModelConfig,
    *,
    name: str = "this model",
    max_sequence: int | None = None,
    parity: bool = True,
    available: int | None = None,
) -> MemoryEstimate:
    """Refuse (ResourceError) an export whose estimated peak exceeds the available memory."""
    estimate = estimate_export_memory(cfg, max_sequence=max_sequence, parity=parity)
    free = available if available is not None else available_memory()
    if free is not None and estimate.total > free:
        hints = ["--no-memory-check if you know better"]
        if parity and estimate.sequence > 8:
            hints.insert(0, "--max-sequence N (or --no-check) to check shorter sequences")
        raise ResourceError(
            f"{name} needs {estimate.describe()}, but this machine has {_gb(free)} available; refused "
            f"before building the model. Use {', or '.join(hints)} (the estimate is fitted to measured "
            "exports, within about 1 GB)"
        )
    return estimate

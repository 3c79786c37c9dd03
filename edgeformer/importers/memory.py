"""The memory pre-check of an import: from config.json alone, before any weight is read.

A Hugging Face directory's config.json says how large the model is; building it and reading its
weights is what takes the memory. ``edgeformer.limits`` estimates the peak of an export (with its
parity check) or of an import alone (``parity`` False: the model, the weights read and the
checkpoint written, about the export's weight term), and a ResourceError gives the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeformer.config import ModelConfig


@dataclass(frozen=True)
class MemoryPlan:
    """What the import is for: ``edgeformer import`` alone (parity False), or an export or a
    parity check up to ``max_sequence``."""

    max_sequence: int | None = None
    parity: bool = False


def check_memory(cfg: ModelConfig, config_path: Path, plan: MemoryPlan) -> None:
    from edgeformer.limits import check_export_memory

    check_export_memory(
        cfg, name=f"the model {config_path} describes", max_sequence=plan.max_sequence, parity=plan.parity
    )

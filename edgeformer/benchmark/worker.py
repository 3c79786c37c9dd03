"""The worker process of ``edgeformer bench``: ``python -P -m edgeformer.benchmark.worker``.

It serves jobs from the orchestrator through the harness (``harness.serve``), one JSON request
each, settings as JSON (``settings.to_json``), and answers one run of the report's schema:

    {"kind": "onnx", "bundle": DIR, "variant": NAME, "label": L, "settings": {...}}    a bundle (runner)
    {"kind": "limits", "label": L, "settings": {...}, "limits": {...}}                 the machine's limits
    {"kind": "torch", "bundle": DIR | null, "card": CARD | null, "weights_seed": S,
     "label": L, "settings": {...}}                                                    torch eager

A process that measures ONNX never imports torch: the torch worker is imported for a torch job only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edgeformer.benchmark.harness import serve
from edgeformer.benchmark.options import Limits
from edgeformer.benchmark.runner import limits_run, run_bundle
from edgeformer.benchmark.settings import from_json
from edgeformer.benchmark.stats import physical_cores
from edgeformer.runtime.errors import OptionError

ARGV = ("-m", "edgeformer.benchmark.worker")  # how the harness starts one


def handle(job: dict[str, Any]) -> dict[str, Any]:
    """One job's run."""
    settings, limits = from_json(job)
    kind, label = job.get("kind"), job.get("label")
    if kind == "onnx":
        return run_bundle(job["bundle"], settings, limits=Limits(enabled=False), label=label, variant=job["variant"])
    if kind == "limits":
        threads = settings.threads or (physical_cores(),)
        return limits_run(threads, limits or Limits(), spinning=settings.spinning, label=label)
    if kind == "torch":
        from edgeformer.benchmark.torch_worker import run_torch  # torch only in a torch variant's process

        bundle = Path(job["bundle"]) if job.get("bundle") else None
        return run_torch(bundle, job.get("card"), settings, weights_seed=job.get("weights_seed", 0), label=label)
    raise OptionError(f"unknown benchmark job {kind!r}")


if __name__ == "__main__":
    sys.exit(serve(handle))

"""The fuse stage: one traced graph fused in place, its parity checked against the unfused graph
(once on the fused graph; pass by pass when that fails)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx_ir as ir

from edgeformer.export.graphs import GraphPlan, fusion_check_cases, make_inputs
from edgeformer.export.manifest_write import EXTERNAL_DATA_BYTES, weight_bytes
from edgeformer.fusions.pipeline import fuse_model

Log = Callable[[str], None]


def fuse_graph(
    model: ir.Model,
    plan: GraphPlan,
    form: str,
    log: Log,
    *,
    packed_attention: bool = True,
    providers: tuple[str, ...] = ("cpu",),
) -> dict[str, Any]:
    """Fuse one traced graph in place, checking parity against the unfused graph (the fused graph
    once; every pass when that fails) on the shapes ``fusion_check_cases`` picks (a short and a long
    padded batch, a step with a cache)."""
    chosen = fusion_check_cases(plan)
    feeds: list | None = [make_inputs(plan, dims, seed=100 + i) for i, dims in enumerate(chosen)]
    skipped = ""
    if weight_bytes(model) > EXTERNAL_DATA_BYTES:
        # per-pass checks keep a copy of the graph per pass; above 1 GiB of weights that costs more
        # memory than the machine may have. The final check against torch still runs.
        skipped = "a graph over 1 GiB of weights (a copy per pass would not fit); the bundle is checked against torch"
        log(f"  (per-pass parity skipped: {skipped})")
        feeds = None
    report = fuse_model(model, form, feeds=feeds, log=log, packed_attention=packed_attention, providers=providers)
    if report.parity_not_checked and not skipped:
        log(f"  per-pass parity NOT checked: {report.parity_not_checked}")
    report.parity_not_checked = skipped or report.parity_not_checked
    cov = report.coverage
    log(
        "  coverage: "
        + ", ".join(f"{k} {v['fused']}/{v['blocks']}" for k, v in cov.items() if v["blocks"])
        + f"; nodes {report.nodes_before} -> {report.nodes_after}"
    )
    for miss in report.not_fused:
        log(f"  NOT FUSED {miss['kind']} at {miss['node']}: {miss['reason']}")
    return report.to_dict()

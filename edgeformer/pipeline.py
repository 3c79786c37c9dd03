"""The driver: the one place that knows the order of the stages.

    trace -> fuse -> [quantize] -> package -> verify

``export_bundle(source, target, out)`` writes a bundle atomically: every graph traced
(``export.trace``), fused with per-pass parity (``fusions.stage``), for a reduced precision
quantized within its budget (``quantize.stage``), packaged for mobile when the target asks
(``export.mobile``), and checked against the torch source (``parity``). The stages never import
each other; they pass a bundle directory and its manifest along. Every stage is timed: a progress
line as it starts and ends, and ``manifest["timings"]`` (seconds per stage, and the total).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeformer.errors import ExportError
from edgeformer.export import mobile
from edgeformer.export.manifest_write import build_manifest, new_bundle_dir, save_graph, write_manifest
from edgeformer.export.source import Source
from edgeformer.export.trace import attention_for, trace
from edgeformer.fixed_shapes import fixed_source
from edgeformer.fusions.stage import fuse_graph
from edgeformer.io import pause_point, scratch_dir
from edgeformer.ownership import check_bundle_output
from edgeformer.parity import budget_cases, check_source
from edgeformer.quantize.stage import quantize_into
from edgeformer.runtime.manifest import parse_manifest
from edgeformer.targets import Target
from edgeformer.travel import copy_travelling

Log = Callable[[str], None]
STAGES = ("trace", "fuse", "verify-fp32", "quantize", "verify", "package")  # the order timings are shown in


@dataclass
class Timings:
    """Wall time per stage, summed over the graphs; each stage logs a line as it starts and ends."""

    log: Log
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=lambda: time.perf_counter())

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[list[str]]:
        """Time the block as stage ``name``; what the block appends to the yielded list ends the line."""
        self.log(f"{name}: {what} ...")
        said: list[str] = []
        start = time.perf_counter()
        yield said
        took = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        self.log(f"{name}: {'; '.join(said) or 'done'}, {took:.1f} s")

    def to_dict(self) -> dict[str, float]:
        """Seconds per stage in pipeline order, and the total (the stages and what lies between)."""
        ordered = {k: round(self.seconds[k], 3) for k in STAGES if k in self.seconds}
        return ordered | {"total": round(time.perf_counter() - self.started, 3)}


def timings_table(timings: dict[str, float]) -> list[str]:
    """``manifest["timings"]`` as lines for the screen: stage, seconds, share of the total."""
    total = timings.get("total") or sum(timings.values()) or 1.0
    lines = [f"{'stage':<12} {'seconds':>8} {'share':>6}"]
    lines += [f"{k:<12} {v:>8.1f} {v / total:>6.0%}" for k, v in timings.items() if k != "total"]
    return lines + [f"{'total':<12} {total:>8.1f}"]


def export_bundle(
    source: Source,
    target: Target,
    out: str | Path,
    *,
    force: bool = False,
    check: bool = True,
    log: Log = lambda _msg: None,
    packed_attention: bool | None = None,
    calibration: str | Path | None = None,
    accept_budget_miss: bool = False,
) -> dict[str, Any]:
    """Trace every graph, check parity, and write the bundle to ``out`` atomically.

    A failed check raises ParityError (its ``report`` attribute holds the details) and writes nothing.
    ``calibration`` (an .npz of input_ids / attention_mask, or text for byte-level models) feeds
    the quantizer of an int8 target: its accuracy budget and static activation ranges.
    """
    clock = Timings(log)
    if target.precision != "fp32":
        settings = Reduced(calibration, accept_budget_miss)
        return export_reduced(source, target, Path(out), force=force, check=check, clock=clock, settings=settings)
    if accept_budget_miss:
        raise ExportError(f"--accept-budget-miss is for reduced-precision targets; {target.name!r} is fp32")
    if calibration is not None:
        raise ExportError(f"--calibration is for reduced-precision targets; {target.name!r} is fp32")
    out = Path(out)
    fixed = fixed_source(source, target)  # static shapes: sizes in specs and checks
    with new_bundle_dir(out, force) as tmp:
        packed = target.precision == "fp32" if packed_attention is None else packed_attention
        manifest = float_bundle(source, target, tmp, clock, packed_attention=packed)
        cases: dict[str, list[Any]] | None = None
        memo: dict[Any, Any] = {}
        if check:
            with clock.stage("verify", "checking parity against the torch source") as said:
                # a mobile target checks twice (.onnx, then .ort): the torch outputs and tokens are computed once
                cases = budget_cases(fixed) if target.ort_format else None
                providers = mobile.runnable_providers(target.providers)
                manifest["parity"] = verify(
                    fixed, tmp, manifest, target, clock.log, providers=providers, references=cases, memo=memo
                )
                said.append("ok" if manifest["parity"]["ok"] else "FAILED")
        if target.ort_format:
            manifest = package(
                tmp, manifest, fixed, target, clock, check=check, budget=None, references=cases, memo=memo
            )
        manifest["timings"] = clock.to_dict()
        write_manifest(tmp, manifest)
    return manifest


def float_bundle(
    source: Source, target: Target, tmp: Path, clock: Timings, *, packed_attention: bool
) -> dict[str, Any]:
    """The trace and fuse stages: every graph of ``source`` traced, fixed to the target's static
    shapes, fused and saved into ``tmp``, the files the source carries copied beside them; returns
    the manifest (not yet written, no parity yet)."""
    fixed = fixed_source(source, target)  # refuses what a static-shape target cannot take, before tracing
    fusions: dict[str, Any] = {}
    files: list[str] = []
    for traced_plan, plan in zip(source.plans, fixed.plans, strict=True):
        with clock.stage("trace", f"tracing {plan.file} (opset {target.opset})") as said:
            # the fuse stage's first pass runs the optimizer the exporter would run: once is enough
            model = trace(
                traced_plan,
                target.opset,
                fixed.example_dims,
                optimize=target.fusions == "none",
                attention=attention_for(target.fusions),
            )
            if target.static_shapes:
                model = mobile.fix_shapes(model, dict(target.static_shapes))
            said.append(f"{len(model.graph)} nodes")
        if target.fusions != "none":
            with clock.stage("fuse", f"fusing {plan.file} ({target.fusions})") as said:
                report = fuse_graph(
                    model,
                    plan,
                    target.fusions,
                    clock.log,
                    packed_attention=packed_attention,
                    providers=target.providers,
                )
                fusions[plan.name] = report
                said.append(
                    f"{len(report['passes'])} passes, nodes {report['nodes_before']} -> {report['nodes_after']}"
                )
        files += save_graph(model, tmp / plan.file)
        pause_point("export:graph-saved")
    files += copy_source_files(fixed, tmp, clock.log)
    manifest = build_manifest(fixed, target, files, tmp)
    if fusions:
        manifest["fusions"] = fusions
    return manifest


def copy_source_files(source: Source, tmp: Path, log: Log) -> list[str]:
    """The files the source carries (its tokenizer: a regular file, never a link) copied into ``tmp``."""
    if source.tokenizer == "tokenizer.json" and "tokenizer.json" not in source.files:
        raise ExportError(
            f"model {source.name!r} names a tokenizer.json but no file to copy (a card not read from a file); "
            "export the card file itself"
        )
    for name, path in source.files.items():
        size = copy_travelling(Path(path), tmp / name, what=f"{name} of model {source.name!r}", error=ExportError)
        log(f"copied into the bundle: {name} (from {Path(path).resolve()}, {size:,} bytes)")
    return list(source.files)


def verify(
    source: Source,
    directory: Path,
    manifest: dict[str, Any],
    target: Target,
    log: Log,
    *,
    file_key: str = "file",
    providers: tuple[str, ...] = ("cpu",),
    budget: dict[str, float] | None = None,
    raise_on_failure: bool = True,
    name_target: bool = True,
    references: dict[str, list[Any]] | None = None,
    memo: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """The verify stage: the bundle's graphs (``file_key``: "file", or "ort_file" for the .ort
    graphs) checked against the torch source; the parity report as the manifest records it. With
    ``name_target`` the report says when the graphs ran elsewhere than on the target's provider.
    ``references`` and ``memo``: the torch outputs and greedy tokens of earlier checks, reused."""
    graphs = {name: directory / g[file_key] for name, g in manifest["graphs"].items()}
    report = check_source(
        source,
        graphs,
        target.precision,
        providers=providers,
        opset=target.opset,
        log=log,
        budget=budget,
        raise_on_failure=raise_on_failure,
        target_providers=tuple(target.providers) if name_target else (),
        references=references,
        memo=memo,
    )
    return report.to_dict()


def package(
    tmp: Path,
    manifest: dict[str, Any],
    fixed: Source,
    target: Target,
    clock: Timings,
    *,
    check: bool,
    budget: dict[str, float] | None,
    references: dict[str, list[Any]] | None = None,
    memo: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """The package stage (the .ort graphs, the reduced-operator config, the usability report), then
    the .ort graphs verified against the torch source on the CPU provider as the .onnx graphs were.
    Returns the manifest with the package stage's fields (read and written through the typed manifest)."""
    with clock.stage("package", f"packaging for {target.name} (.ort, {target.ort_optimization} optimizations)"):
        typed = parse_manifest(manifest, f"{tmp}/manifest.json (being packaged)")
        packaged, _ = mobile.package(tmp, typed, target, clock.log)
        manifest = packaged.to_dict()
    if check:
        with clock.stage("verify", "checking the .ort graphs against the torch source (CPU provider)") as said:
            ort_parity = verify(
                fixed, tmp, manifest, target, clock.log, file_key="ort_file", budget=budget or None,
                name_target=False, references=references, memo=memo,
            )  # fmt: skip
            manifest["mobile"]["ort_parity"] = ort_parity
            said.append("ok" if ort_parity["ok"] else "FAILED")
    for line in mobile.format_report(manifest["mobile"]):
        clock.log(line)
    return manifest


@dataclass
class Reduced:
    """What a reduced-precision export takes beyond the target: calibration rows, and whether a
    budget miss is written anyway (recorded in the manifest)."""

    calibration: str | Path | None = None
    accept_budget_miss: bool = False


def export_reduced(
    source: Source, target: Target, out: Path, *, force: bool, check: bool, clock: Timings, settings: Reduced
) -> dict[str, Any]:
    """An int8 / int4 / fp16 bundle: the fp32 graphs first (fused, checked against torch), then
    quantized within the target's budget, judged on held-out rows (``edgeformer.verdict``), then
    checked against torch by that budget. A miss of either raises (nothing written) unless
    ``accept_budget_miss``: then the bundle is written and its manifest records the miss."""
    check_bundle_output(out, force, ExportError)
    refuse_calibration(source, target, settings.calibration)
    float_target = dataclasses.replace(
        target, name=f"{target.name}(fp32 stage)", precision="fp32", budget=(), ort_format=False
    )
    fixed = fixed_source(source, target)  # refuses what a static-shape target cannot take, before tracing
    with scratch_dir(out) as scratch, new_bundle_dir(out, force) as tmp:  # scratch: removed by the next write
        float_dir = scratch / "fp32"
        float_dir.mkdir()
        # attention as MultiHeadAttention with separate projections, which the quantizer reaches
        float_manifest = float_bundle(source, float_target, float_dir, clock, packed_attention=False)
        cases: dict[str, list[Any]] | None = None  # the torch outputs, computed once for every check
        memo: dict[Any, Any] = {}  # the torch greedy tokens, likewise
        if check:
            with clock.stage("verify-fp32", "checking the fp32 graphs against the torch source"):
                # the final check's shapes and torch outputs, once: this check, the precision search (which meets
                # the budget on them) and the final check all judge against them
                cases = budget_cases(fixed)
                providers = mobile.runnable_providers(target.providers)
                float_manifest["parity"] = verify(
                    fixed, float_dir, float_manifest, float_target, clock.log, providers=providers,
                    references=cases, memo=memo,
                )  # fmt: skip
        write_manifest(float_dir, float_manifest)
        with clock.stage("quantize", f"quantizing to {target.precision}") as said:
            manifest = quantize_into(
                float_dir, tmp, scratch_beside=out, precision=target.precision, mode=target.quantization,
                budget=dict(target.budget), calibration_file=settings.calibration, target_name=target.name,
                accept_budget_miss=settings.accept_budget_miss, log=clock.log, cases=cases,
            )  # fmt: skip
            said.append("budget met" if manifest["quantization"]["verdict"]["ok"] else "budget NOT met (accepted)")
        manifest["target"] = target.to_dict() | {"budget": manifest["target"]["budget"]}
        if check:
            verify_reduced(
                fixed, tmp, manifest, target, clock, accept_budget_miss=settings.accept_budget_miss,
                references=cases, memo=memo,
            )  # fmt: skip
        if target.ort_format:
            manifest = package(
                tmp, manifest, fixed, target, clock, check=check, budget=manifest["target"]["budget"],
                references=cases, memo=memo,
            )  # fmt: skip
        manifest["timings"] = clock.to_dict()
        write_manifest(tmp, manifest)
    return manifest


def refuse_calibration(source: Source, target: Target, calibration: str | Path | None) -> None:
    """Static int8 takes its activation ranges from calibration data; a named file must exist."""
    static = target.precision == "int8" and target.quantization == "static"
    if static and calibration is None and source.tokenizer != "bytes":
        raise ExportError(
            f"target {target.name!r} is static int8: its activation ranges come from calibration data. "
            "Give --calibration FILE.npz (input_ids and attention_mask rows of real inputs)"
        )
    if calibration is not None and not Path(calibration).is_file():
        raise ExportError(f"calibration file {calibration} does not exist")


def verify_reduced(
    fixed: Source,
    tmp: Path,
    manifest: dict[str, Any],
    target: Target,
    clock: Timings,
    *,
    accept_budget_miss: bool,
    references: dict[str, list[Any]] | None = None,
    memo: dict[Any, Any] | None = None,
) -> None:
    """The verify stage of a reduced precision: the quantized graphs against torch by the budget;
    a miss raises unless accepted, then it is recorded beside the quantization verdict."""
    with clock.stage("verify", f"checking {target.precision} parity against the torch source") as said:
        budget = manifest["target"]["budget"]
        parity = verify(
            fixed,
            tmp,
            manifest,
            target,
            clock.log,
            budget=budget,
            raise_on_failure=not accept_budget_miss,
            references=references,
            memo=memo,
        )
        manifest["parity"] = parity
        said.append("ok" if parity["ok"] else "FAILED (accepted)")
    if not parity["ok"]:  # accepted: recorded beside the quantization verdict
        accepted = manifest.get("accepted_budget_miss") or {"accepted": True, "ok": False, "misses": []}
        accepted["misses"] = accepted["misses"] + [
            f"against torch at {c['dims']}: {m}" for c in parity["cases"] for m in c.get("violations", [])
        ]
        manifest["accepted_budget_miss"] = accepted

"""``check_bundle``: a bundle against its torch source, and what it verifies when that source is code.

A bundle whose source is a user's factory (``module:function``) names code; edgeformer never
imports code because a bundle names it. Without ``--factory``, ``check`` verifies what needs no
torch source, and says plainly that torch parity was not checked:

- manifest.json against manifest.sha256 (and the pinned digest, when given), every file against
  its sha256, external data inside the bundle (``runtime.bundle.read_bundle``);
- each graph against the manifest's IO spec: names, element types, ranks, fixed sizes (the
  runtime's ``load``);
- each graph runs on inputs built from that spec, and every output is finite;
- the parity summary recorded at export says ok (the exporter's claim, covered by the digest).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeformer import runtime
from edgeformer.errors import BundleError, UserCodeNotRun
from edgeformer.export.manifest_read import read_checked
from edgeformer.export.rebuild import rebuild_source
from edgeformer.export.source import Source
from edgeformer.fixed_shapes import source_at_bundle_shapes
from edgeformer.parity import ParityReport, check_source
from edgeformer.quantize import verdict_rows
from edgeformer.runtime.bundle import Bundle
from edgeformer.runtime.errors import RuntimeBundleError
from edgeformer.verdict import Verdict

Log = Callable[[str], None]


@dataclass
class SourcelessReport:
    """The checks of a bundle whose torch source was not rebuilt; ``torch_parity`` says why."""

    reason: str  # why torch parity was not checked
    checks: dict[str, str] = field(default_factory=dict)  # check -> "ok" or what failed
    precision: str = "fp32"
    torch_parity: str = "not checked"

    @property
    def ok(self) -> bool:
        return all(v == "ok" or v.startswith("none") for v in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "torch_parity": self.torch_parity,
            "why": self.reason,
            "precision": self.precision,
            "checks": self.checks,
        }


def spec_dims(manifest: dict[str, Any], graph: str) -> dict[str, int]:
    """Sizes of the named dimensions: those of the first parity case recorded for ``graph``, else
    2 for each (4 for a total_* dimension, the past plus the new sequence)."""
    for case in (manifest.get("parity") or {}).get("cases") or []:
        dims = case.get("dims") if isinstance(case, dict) else None
        if case.get("graph") == graph and isinstance(dims, dict):
            return {str(k): v for k, v in dims.items() if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 64}
    return {}


def spec_inputs(graph: Any, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the graph's spec (``runtime.bundle.Graph``): masks of ones, other integers zero
    (a valid id of any vocabulary), floats standard normal, booleans true."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in graph.inputs:
        shape = tuple(d if isinstance(d, int) else dims.get(d, 4 if d.startswith("total") else 2) for d in spec.shape)
        if spec.dtype == "bool":
            feeds[spec.name] = np.ones(shape, dtype=bool)
        elif spec.dtype.startswith(("int", "uint")):
            fill = 1 if "mask" in spec.name else 0
            feeds[spec.name] = np.full(shape, fill, dtype=spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype if spec.dtype != "bfloat16" else "float32")
    return feeds


def _runs(model: Any, manifest: dict[str, Any]) -> str:
    for name, graph in model.bundle.graphs.items():
        feeds = spec_inputs(graph, spec_dims(manifest, name))
        try:
            outputs = model.sessions[name].run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own types; the first line says it
            return f"graph {name!r} did not run on inputs built from its spec: {str(exc).strip()[:200]}"
        names = [o.name for o in model.sessions[name].get_outputs()]
        bad = [n for n, out in zip(names, outputs, strict=True) if np.issubdtype(out.dtype, np.floating)
               and not np.isfinite(out).all()]  # fmt: skip
        if bad:
            return f"graph {name!r} gives non-finite values (NaN or infinity) in {', '.join(bad)}"
    return "ok"


def _recorded(manifest: dict[str, Any]) -> str:
    parity = manifest.get("parity")
    if not parity:
        return "none recorded (exported with --no-check)"
    if parity.get("ok") is not True:
        return "the parity recorded at export failed"
    return "ok"


def check_without_source(
    bundle: Path, manifest: dict[str, Any], reason: str, *, providers: tuple[str, ...] = ("cpu",), log: Log = print
) -> SourcelessReport:
    """Verify what needs no torch source (see the module docstring); ``manifest`` has been read
    and its files verified by the caller."""
    report = SourcelessReport(reason, precision=str(manifest.get("precision", "fp32")))
    report.checks["files"] = "ok"  # the caller read the bundle with verify=True
    try:
        model = runtime.load(bundle, providers, strict=True, spinning=False)
        report.checks["io spec"] = "ok"
    except RuntimeBundleError as exc:
        report.checks["io spec"] = str(exc)
        model = None
    not_run = "not run (the graphs did not load)"
    report.checks["graphs run, outputs finite"] = _runs(model, manifest) if model else not_run
    report.checks["recorded parity"] = _recorded(manifest)
    for check, outcome in report.checks.items():
        log(f"  {check}: {outcome}")
    log(f"torch parity NOT checked: {reason}")
    return report


def check_bundle(
    bundle: str | Path,
    *,
    generation_steps: int = 32,
    real_inputs: dict[str, np.ndarray] | None = None,
    max_sequence: int | None = None,
    log: Log = lambda _msg: None,
    memory_check: bool = True,
    providers: tuple[str, ...] = ("cpu",),
    factory: str | None = None,
    expect_manifest_sha256: str | None = None,
) -> ParityReport | SourcelessReport:
    """Rebuild the torch source a bundle records and check the bundle's graphs against it
    (refused before the torch model is built when it would not fit in memory, unless not
    ``memory_check``). ``providers`` run the graphs, strictly (``("cuda",)``: on the GPU or an error).

    The manifest is verified against manifest.sha256 and ``expect_manifest_sha256`` when given.
    No code the bundle names is imported: a user's factory runs only when named by ``factory``;
    without it the result is a ``verify_bundle.SourcelessReport`` (``torch_parity`` "not
    checked") of what needs no torch source. A ParityReport has ``torch_parity`` "checked"."""
    bundle = Path(bundle)
    read = read_checked(bundle, expect_manifest_sha256=expect_manifest_sha256, keep_bytes=True)
    manifest = read.manifest
    stamp = "matches manifest.sha256" if read.manifest_stamped else "NO manifest.sha256: edits cannot be detected"
    log(f"manifest sha256 {read.manifest_sha256} ({stamp}{'; as expected' if expect_manifest_sha256 else ''})")
    try:
        source = rebuild_source(manifest, max_sequence, memory_check=memory_check, factory=factory, log=log)
    except UserCodeNotRun as exc:
        why = f"the torch source is user code ({exc.spec}); pass --factory {exc.spec} to run it"
        return check_without_source(bundle, manifest, why, providers=providers, log=log)
    source = source_at_bundle_shapes(source, manifest)  # a fixed-shape bundle is checked at its shape
    with tempfile.TemporaryDirectory(prefix="edgeformer-check-") as tmp:
        private = _private_copy(read, Path(tmp))
        graphs = {name: private / g["file"] for name, g in manifest["graphs"].items()}
        report = check_source(
            source,
            graphs,
            manifest.get("precision", "fp32"),
            opset=int(manifest.get("opset", 18)),
            generation_steps=generation_steps,
            real_inputs=real_inputs,
            log=log,
            providers=providers,
            budget=(manifest.get("target") or {}).get("budget") or None,
            target_providers=_target_providers(manifest),
            raise_on_failure=not isinstance(manifest.get("accepted_budget_miss"), dict),  # the CLI says accepted
        )
        report.recorded_verdict = _recorded_verdict(manifest)
        rejudged = _rejudge(bundle, source, graphs, manifest, report, providers, log)
        report.rejudged_verdict, report.rejudge_note = rejudged
    accepted = manifest.get("accepted_budget_miss")
    report.accepted_budget_miss = accepted if isinstance(accepted, dict) else None
    return report


def _rejudge(
    bundle: Path,
    source: Source,
    graphs: dict[str, Path],
    manifest: dict[str, Any],
    report: ParityReport,
    providers: tuple[str, ...],
    log: Log,
) -> tuple[dict[str, Any] | None, str]:
    """The recorded quantization verdict judged again on the rows it names (``quantize.verdict_rows``),
    or None and why not: a bundle written before its verdict rows travelled with it."""
    if report.recorded_verdict is None:
        return None, ""
    recorded = Verdict.from_dict(report.recorded_verdict)
    if not recorded.rows_file:
        return None, "not re-measured: this bundle carries no verdict rows (written by an older edgeformer)"
    groups = verdict_rows.read_rows(bundle, manifest, recorded.rows_file)
    log(f"  judging the verdict again on {recorded.rows_file} ({sum(len(g.ids) for g in groups)} rows) ...")
    verdict = verdict_rows.rejudge(
        source, graphs, manifest, groups, recorded, providers=providers, target_providers=_target_providers(manifest)
    )
    return verdict.to_dict(), ""


def _target_providers(manifest: dict[str, Any]) -> tuple[str, ...]:
    providers = (manifest.get("target") or {}).get("providers")
    return tuple(p for p in providers if isinstance(p, str)) if isinstance(providers, list) else ()


def _recorded_verdict(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The quantization verdict the manifest records, checked field by field (a manifest is data)."""
    recorded = (
        (manifest.get("quantization") or {}).get("verdict") if isinstance(manifest.get("quantization"), dict) else None
    )
    if recorded is None:
        return None
    try:
        return Verdict.from_dict(recorded).to_dict()
    except ValueError as exc:
        raise BundleError(f"manifest.json: quantization.verdict is malformed ({exc})") from None


def _private_copy(read: Bundle, tmp: Path) -> Path:
    """The verified graph bytes (and their external data) written into ``tmp``, a directory of
    this process: what the parity check opens is what was hashed, whatever happens to the bundle
    meanwhile. The bytes are released once written."""
    for path, data in read.blobs.items():
        dest = tmp / path.relative_to(read.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    read.blobs.clear()
    return tmp

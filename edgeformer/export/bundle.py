"""Bundles: the directory an app embeds. Written atomically, described by manifest.json.

manifest.json: format version; the card and config; per graph its file, inputs and outputs (name,
dtype, symbolic shape); precision, target, opset, providers; producer versions; sha256 of every
file; how to rebuild the torch source; the parity summary.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from edgeformer import __version__
from edgeformer.config import ModelCard, ModelConfig, Target, parse_card, render_card
from edgeformer.errors import BundleError, CardError, EdgeformerError, ExportError, UserCodeNotRun
from edgeformer.export.graphs import GraphPlan, plan_graphs
from edgeformer.export.trace import trace
from edgeformer.io import atomic_dir, pause_point, scratch_dir, sha256_file
from edgeformer.nn.checkpoint import load_model
from edgeformer.runtime.errors import RuntimeBundleError
from edgeformer.runtime.manifest import (
    FORMAT_VERSION,
    GraphEntry,
    Manifest,
    TensorSpec,
    manifest_text,
    parse_manifest,
    parse_recipe,
)
from edgeformer.travel import copy_travelling, travelling_file

EXTERNAL_DATA_BYTES = 1 << 30  # weights beyond 1 GiB go to <graph>.onnx.data (protobuf stops at 2 GiB)

Log = Callable[[str], None]


@dataclass
class Source:
    """The torch source of a bundle, and the recipe that rebuilds it from the manifest alone."""

    name: str
    model: nn.Module
    config: ModelConfig | None  # None for a user's own module
    plans: list[GraphPlan]
    recipe: dict[str, Any]
    tokenizer: str = ""
    example_dims: dict[str, int] | None = None  # sizes to trace with (all >= 2); None: the defaults
    files: dict[str, Path] = field(default_factory=dict)  # copied into the bundle: name there -> file here


def tokenizer_files(card: ModelCard) -> tuple[str, dict[str, Path]]:
    """The manifest's tokenizer and the files it needs: a card's ``tokenizer = "x.json"`` (a
    Hugging Face tokenizer beside the card) travels as the bundle's tokenizer.json. Only a regular
    file in the card's own directory travels (``edgeformer.travel``): an absolute name, ``..`` or a
    symbolic link is a CardError. A card not read from a file (rebuilt from a manifest for a parity
    check) has no directory, so no file travels; exporting such a card is refused in ``export_bundle``."""
    if not card.tokenizer.endswith(".json"):
        return card.tokenizer, {}
    if card.path is None:
        return "tokenizer.json", {}
    base = card.path.parent
    what = f"the tokenizer of card {card.name!r}"
    return "tokenizer.json", {"tokenizer.json": travelling_file(base, card.tokenizer, what=what, error=CardError)}


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise ExportError(f"seed must be an integer in [-2**63, 2**64), got {seed!r:.40}")


def source_from_card(
    card: ModelCard,
    *,
    seed: int = 0,
    max_sequence: int | None = None,
    memory_check: bool = True,
    parity: bool = True,
) -> Source:
    """The card's torch model; parity is checked up to the card's maximum sequence length, or up to
    ``max_sequence`` when given (long-context cards need tens of GB at their maximum).

    With ``memory_check``, a card whose export (with its parity check, unless ``parity`` is False)
    would need more memory than the machine has is refused before the model is built
    (``edgeformer.limits``; ResourceError with the estimate)."""
    _check_seed(seed)
    if memory_check:
        from edgeformer.limits import check_export_memory

        check_export_memory(card.config, name=card.name, max_sequence=max_sequence, parity=parity)
    model = load_model(card, seed=seed)
    recipe: dict[str, Any] = {"kind": "card", "card": render_card(card), "seed": seed}
    if card.checkpoint is not None:
        recipe["checkpoint"] = str(card.checkpoint.resolve())
        recipe["checkpoint_sha256"] = card.checkpoint_sha256 or sha256_file(card.checkpoint)
    plans = plan_graphs(model, card.config, max_sequence)
    tokenizer, files = tokenizer_files(card)
    return Source(card.name, model, card.config, plans, recipe, tokenizer, files=files)


def source_from_factory(spec: str, io: dict[str, Any] | None = None, *, seed: int = 0) -> Source:
    """A user's module from ``package.module:factory``; inputs declared by ``io`` or the factory's
    ``edgeformer_io`` attribute. Random weights the factory makes come from ``seed``."""
    from edgeformer.export.user import load_factory, user_plan

    factory = load_factory(spec)
    io = io if io is not None else getattr(factory, "edgeformer_io", None)
    if io is None:
        raise ExportError(
            f"{spec}: declare its inputs with --io FILE.toml or a `edgeformer_io` attribute on the factory"
        )
    _check_seed(seed)
    torch.manual_seed(seed)
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code; sys.exit must not end a check as a success
        first = (str(exc).splitlines() or [""])[0]
        raise ExportError(f"factory {spec} failed: {type(exc).__name__}: {first}") from None
    if not isinstance(model, nn.Module):
        raise ExportError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    plan, sizes = user_plan(model, io)
    recipe = {"kind": "factory", "factory": spec, "io": io, "seed": seed}
    return Source(spec.rpartition(":")[2], model, None, [plan], recipe, example_dims=sizes)


def _user_factory(recipe: dict[str, Any], factory: str | None, log: Log) -> Source:
    """The source from the factory the user named; a bundle's own recipe never chooses code to import."""
    recorded = recipe.get("factory") if recipe.get("kind") == "factory" else None
    if recipe.get("kind") == "factory" and not recorded:
        raise BundleError("the manifest's source names no factory to rebuild the torch module from")
    if factory is None:
        raise UserCodeNotRun(str(recorded))
    if factory != recorded:
        log(f"note: using the factory you named, {factory}; the bundle records {recorded or recipe.get('kind')!r}")
    io = recipe.get("io") if recorded is not None else None
    return source_from_factory(factory, io, seed=recipe.get("seed", 0))


def rebuild_source(
    manifest: dict[str, Any],
    max_sequence: int | None = None,
    *,
    memory_check: bool = True,
    factory: str | None = None,
    log: Log = lambda _msg: None,
) -> Source:
    """The torch source a manifest records: its card (with checkpoint, verified by sha256) or seed,
    or the Hugging Face directory it was imported from (weights verified by sha256).
    ``memory_check`` as in ``source_from_card``.

    A manifest is data: no code it names is imported. A source of kind "factory" (a user's
    ``module:function``) is rebuilt only from ``factory``, the one the user names (``--factory``);
    without it, UserCodeNotRun. A ``factory`` given for a bundle that records another source
    replaces that source, with a note to ``log``."""
    import tomllib

    check_producer_fields(manifest, "manifest.json")
    recipe = manifest.get("source") or {}
    if recipe.get("kind") == "factory" or factory is not None:
        return _user_factory(recipe, factory, log)
    if recipe.get("kind") == "huggingface":
        from edgeformer.importers import rebuild_source as rebuild_imported

        return rebuild_imported(recipe, max_sequence)
    if recipe.get("kind") != "card":
        raise BundleError(f"this bundle's source kind {recipe.get('kind')!r} cannot be rebuilt")
    try:
        card = parse_card(tomllib.loads(recipe.get("card", "")), source="manifest card")
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"the manifest's card is not valid TOML ({exc})") from None
    if "checkpoint" in recipe:
        if "checkpoint_sha256" not in recipe:
            raise BundleError("the manifest's source names a checkpoint without its sha256")
        path = Path(recipe["checkpoint"])
        if not path.is_file():
            from edgeformer.zoo import resolve_card

            with contextlib.suppress(EdgeformerError):  # the same card in this installation's zoo
                path = resolve_card(card.name).checkpoint or path
        if not path.is_file() or sha256_file(path) != recipe["checkpoint_sha256"]:
            raise BundleError(
                f"the torch source's checkpoint {recipe['checkpoint']} (sha256 {recipe['checkpoint_sha256'][:12]}...) "
                "is not on this machine; parity needs the weights the bundle was exported from"
            )
        card = ModelCard(card.name, card.config, card.description, path, recipe["checkpoint_sha256"], card.tokenizer)
    else:
        card = ModelCard(card.name, card.config, card.description, None, "", card.tokenizer)
    return source_from_card(card, seed=recipe.get("seed", 0), max_sequence=max_sequence, memory_check=memory_check)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "edgeformer": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "onnx_ir": ir.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def stamp(model: ir.Model) -> None:
    """Mark a graph as edgeformer's (``ownership.STAMP_KEY`` in its metadata), so that ``--force``
    may later replace the file and nothing else."""
    from edgeformer.ownership import STAMP_KEY

    model.metadata_props[STAMP_KEY] = __version__


def save_graph(model: ir.Model, path: Path) -> list[str]:
    """Write one graph; weights over EXTERNAL_DATA_BYTES go to <file>.data. Returns the files written."""
    stamp(model)
    if weight_bytes(model) > EXTERNAL_DATA_BYTES:
        ir.save(model, path, external_data=f"{path.name}.data")
        return [path.name, f"{path.name}.data"]
    ir.save(model, path)
    return [path.name]


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in names}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """Write ``manifest`` into the bundle ``directory``, with each graph's ``weights_read_bytes``
    (export/weight_reads.py: what the benchmark divides weight-reading bandwidth by) measured from
    the graph file as it is now, and manifest.sha256 beside it (the sha256 of manifest.json's
    bytes, in ``sha256sum`` format; see ``edgeformer.runtime.bundle``). Every writer of a bundle
    (export, fuse, quantize, the mobile targets through export) comes here. Returns the digest:
    give it to the bundle's receivers by another channel, and they pin the bundle with
    ``edgeformer check --expect-sha256`` / ``runtime.load(..., expect_manifest_sha256=...)``."""
    from edgeformer.export.weight_reads import graph_weights_read
    from edgeformer.runtime.bundle import stamp_manifest

    for graph in manifest.get("graphs", {}).values():
        path = directory / graph["file"]
        if path.suffix == ".onnx" and path.is_file():
            graph["weights_read_bytes"] = graph_weights_read(path)
    text = manifest_text(parse_manifest(manifest, f"{directory}/manifest.json"))  # the typed reader and writer
    (directory / "manifest.json").write_text(text, encoding="utf-8")
    return stamp_manifest(directory)


def build_manifest(source: Source, target: Target, files: list[str], directory: Path) -> dict[str, Any]:
    """The typed manifest of a bundle just traced, as its JSON object (the stages add their reports)."""
    graphs = {
        plan.name: GraphEntry(
            plan.file,
            tuple(TensorSpec(s.name, s.dtype, tuple(s.shape)) for s in plan.inputs),
            tuple(TensorSpec(s.name, s.dtype, tuple(s.shape)) for s in plan.outputs),
        )
        for plan in source.plans
    }
    return Manifest(
        format_version=FORMAT_VERSION,
        name=source.name,
        family=source.config.family if source.config else "custom",
        config=source.config.to_dict() if source.config else None,
        tokenizer=source.tokenizer,
        precision=target.precision,
        target=target.to_dict(),
        opset=target.opset,
        providers_tried=tuple(target.providers),
        graphs=graphs,
        files=file_hashes(directory, files),
        producer=versions(),
        source=parse_recipe(source.recipe, "the export's source"),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ).to_dict()


def read_manifest(bundle: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of a bundle, read and checked by the runtime's reader (the one apps use):
    file names must stay inside the bundle, files must exist and, with ``verify``, match their sha256."""
    return read_checked(bundle, verify=verify).manifest


def read_checked(
    bundle: str | Path, *, verify: bool = True, expect_manifest_sha256: str | None = None, keep_bytes: bool = False
) -> Any:
    """``read_manifest``, returning the runtime's ``Bundle`` (with ``manifest_sha256`` and
    whether manifest.sha256 was there); ``expect_manifest_sha256`` pins the manifest;
    ``keep_bytes`` keeps the verified graph bytes (``runtime.bundle.read_bundle``)."""
    from edgeformer.runtime.bundle import read_bundle
    from edgeformer.runtime.errors import RuntimeBundleError

    try:
        read = read_bundle(bundle, verify=verify, expect_manifest_sha256=expect_manifest_sha256, keep_bytes=keep_bytes)
    except RuntimeBundleError as exc:
        raise BundleError(str(exc)) from None
    check_producer_fields(read.manifest, f"{bundle}/manifest.json")
    return read


def check_producer_fields(manifest: dict[str, Any], where: str) -> None:
    """Refuse (BundleError) a manifest the typed reader (``runtime.manifest``) refuses: a field
    of the wrong type, an unknown precision (a check against it would judge nothing)."""
    try:
        parse_manifest(manifest, where)
    except RuntimeBundleError as exc:
        raise BundleError(str(exc)) from None


def new_bundle_dir(out: Path, force: bool) -> contextlib.AbstractContextManager[Path]:
    """The temporary directory a bundle is written to, renamed to ``out`` when complete. What is
    at ``out`` is replaced only with ``force`` and only when it is a bundle edgeformer wrote
    (``edgeformer.ownership``); anything else is refused before a byte is written."""
    from edgeformer.ownership import check_bundle_output

    check_bundle_output(out, force, ExportError)
    return atomic_dir(out)


def fuse_graph(
    model: ir.Model,
    plan: GraphPlan,
    form: str,
    log: Log,
    *,
    packed_attention: bool = True,
    providers: tuple[str, ...] = ("cpu",),
) -> dict[str, Any]:
    """Fuse one traced graph in place, checking parity against the unfused graph after every pass
    on the shapes ``fusion_check_cases`` picks (a short and a long padded batch, a step with a cache)."""
    from edgeformer.export.graphs import fusion_check_cases, make_inputs
    from edgeformer.fusions.pipeline import fuse_model

    chosen = fusion_check_cases(plan)
    feeds: list | None = [make_inputs(plan, dims, seed=100 + i) for i, dims in enumerate(chosen)]
    log(f"fusing {plan.file} ({form}) ...")
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
    if target.precision != "fp32":
        return export_reduced(
            source,
            target,
            Path(out),
            force=force,
            check=check,
            log=log,
            calibration=calibration,
            accept_budget_miss=accept_budget_miss,
        )
    if accept_budget_miss:
        raise ExportError(f"--accept-budget-miss is for reduced-precision targets; {target.name!r} is fp32")
    if calibration is not None:
        raise ExportError(f"--calibration is for reduced-precision targets; {target.name!r} is fp32")
    from edgeformer.export import mobile
    from edgeformer.parity import check_source

    out = Path(out)
    fusions: dict[str, Any] = {}
    traced, source = source, mobile.fixed_source(source, target)  # static shapes: sizes in specs and checks
    with new_bundle_dir(out, force) as tmp:
        files: list[str] = []
        for traced_plan, plan in zip(traced.plans, source.plans, strict=True):
            start = time.perf_counter()
            log(f"tracing {plan.file} (opset {target.opset}) ...")
            model = trace(traced_plan, target.opset, source.example_dims)
            if target.static_shapes:
                model = mobile.fix_shapes(model, dict(target.static_shapes))
            log(f"  {len(model.graph)} nodes, {time.perf_counter() - start:.1f} s")
            if target.fusions != "none":
                fusions[plan.name] = fuse_graph(
                    model,
                    plan,
                    target.fusions,
                    log,
                    packed_attention=target.precision == "fp32" if packed_attention is None else packed_attention,
                    providers=target.providers,
                )
            files += save_graph(model, tmp / plan.file)
            pause_point("export:graph-saved")
        if source.tokenizer == "tokenizer.json" and "tokenizer.json" not in source.files:
            raise ExportError(
                f"model {source.name!r} names a tokenizer.json but no file to copy (a card not read from a file); "
                "export the card file itself"
            )
        for name, path in source.files.items():  # the tokenizer: a regular file, never a link
            size = copy_travelling(Path(path), tmp / name, what=f"{name} of model {source.name!r}", error=ExportError)
            log(f"copied into the bundle: {name} (from {Path(path).resolve()}, {size:,} bytes)")
            files.append(name)
        manifest = build_manifest(source, target, files, tmp)
        if fusions:
            manifest["fusions"] = fusions
        if check:
            log("checking parity against the torch source ...")
            graphs = {p.name: tmp / p.file for p in source.plans}
            report = check_source(
                source,
                graphs,
                target.precision,
                providers=mobile.runnable_providers(target.providers),
                opset=target.opset,
                log=log,
                target_providers=tuple(target.providers),
            )
            manifest["parity"] = report.to_dict()
        if target.ort_format:
            mobile.package(tmp, manifest, source, target, log, check=check)
        write_manifest(tmp, manifest)
    return manifest


def export_reduced(
    source: Source,
    target: Target,
    out: Path,
    *,
    force: bool,
    check: bool,
    log: Log,
    calibration: str | Path | None = None,
    accept_budget_miss: bool = False,
) -> dict[str, Any]:
    """An int8 / int4 / fp16 bundle: the fp32 bundle first (fused, checked against torch), then
    quantized within the target's budget, judged on held-out rows (``edgeformer.verdict``), then
    checked against torch by that budget. A miss of either raises (nothing written) unless
    ``accept_budget_miss``: then the bundle is written and its manifest records the miss."""
    import dataclasses

    from edgeformer.ownership import check_bundle_output
    from edgeformer.parity import budget_cases, check_source
    from edgeformer.quantize.bundle import quantize_bundle

    check_bundle_output(out, force, ExportError)
    static = target.precision == "int8" and target.quantization == "static"
    if static and calibration is None and source.tokenizer != "bytes":
        raise ExportError(
            f"target {target.name!r} is static int8: its activation ranges come from calibration data. "
            "Give --calibration FILE.npz (input_ids and attention_mask rows of real inputs)"
        )
    if calibration is not None and not Path(calibration).is_file():
        raise ExportError(f"calibration file {calibration} does not exist")
    from edgeformer.export import mobile

    float_target = dataclasses.replace(
        target, name=f"{target.name}(fp32 stage)", precision="fp32", budget=(), ort_format=False
    )
    fixed = mobile.fixed_source(source, target)  # refuses what a static-shape target cannot take, before tracing
    with scratch_dir(out) as tmp:  # beside the output, removed by the next write if a kill leaves it
        float_bundle = tmp / "fp32"
        # attention as MultiHeadAttention with separate projections, which the quantizer reaches
        export_bundle(source, float_target, float_bundle, check=check, log=log, packed_attention=False)
        # the final check's shapes and torch outputs, once: the search meets the budget on them, the check reuses them
        cases = budget_cases(fixed) if check else None

        def checked(directory: Path, manifest: dict[str, Any]) -> None:
            manifest["target"] = target.to_dict() | {"budget": manifest["target"]["budget"]}
            if check:
                log(f"checking {target.precision} parity against the torch source ...")
                graphs = {name: directory / g["file"] for name, g in manifest["graphs"].items()}
                report = check_source(
                    fixed,
                    graphs,
                    target.precision,
                    opset=target.opset,
                    log=log,
                    budget=manifest["target"]["budget"],
                    raise_on_failure=not accept_budget_miss,
                    target_providers=tuple(target.providers),
                    references=cases,
                )
                manifest["parity"] = report.to_dict()
                if not report.ok:  # accepted: recorded beside the quantization verdict
                    accepted = manifest.get("accepted_budget_miss") or {"accepted": True, "ok": False, "misses": []}
                    accepted["misses"] = accepted["misses"] + [
                        f"against torch at {c.dims}: {m}" for c in report.cases for m in c.violations
                    ]
                    manifest["accepted_budget_miss"] = accepted
            if target.ort_format:
                mobile.package(
                    directory, manifest, fixed, target, log, check=check, budget=manifest["target"]["budget"]
                )

        return quantize_bundle(
            float_bundle,
            out,
            precision=target.precision,
            mode=target.quantization,
            budget=dict(target.budget),
            calibration_file=calibration,
            target_name=target.name,
            force=force,
            accept_budget_miss=accept_budget_miss,
            log=log,
            before_commit=checked,
            cases=cases,
        )

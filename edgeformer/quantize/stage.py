"""Quantize a bundle into a new bundle: every graph, within an accuracy budget, with a report.

    quantize_bundle("gpt-mini-cpu-fp32/", "gpt-mini-cpu-int8/", precision="int8")

The float bundle's own graphs are the reference (its manifest proves them equal to the torch
source within 1e-4): the budget metrics are measured against them on calibration rows while
choosing what stays in float, then on held-out validation rows for the report.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgeformer import budget as budgets
from edgeformer.errors import ExportError
from edgeformer.export.manifest_read import read_checked
from edgeformer.export.manifest_write import file_hashes, new_bundle_dir, write_manifest
from edgeformer.io import scratch_dir
from edgeformer.ownership import check_bundle_output
from edgeformer.paths import refuse_overlap
from edgeformer.quantize import calibration, int8, qattention
from edgeformer.quantize.mixed import _session, outputs_of
from edgeformer.quantize.passes import QuantizeError, QuantizePass, pass_for
from edgeformer.quantize.verdict_rows import language_model as is_language_model
from edgeformer.quantize.verdict_rows import write_rows
from edgeformer.verdict import combine, judge

Log = Callable[[str], None]
__all__ = ["BudgetMissError", "QuantizeError", "quantize_bundle", "quantize_into"]


class BudgetMissError(QuantizeError):
    """The reduced graph misses its accuracy budget on the verdict rows; nothing was written.
    ``verdict`` holds the ``edgeformer.verdict.Verdict``."""

    def __init__(self, message: str, verdict: Any) -> None:
        super().__init__(message)
        self.verdict = verdict


def budget_miss_message(verdict: Any, calibration_given: bool) -> str:
    advice = [
        "keep more nodes in float with a looser budget (--budget METRIC=VALUE)",
        "try another calibration method or dynamic mode",
    ]
    if not calibration_given:
        advice.insert(0, "give --calibration FILE.npz of your app's real inputs (none was given)")
    return (
        f"{verdict.line()}. No bundle was written. To meet the budget: {'; or '.join(advice)}. To write the "
        "bundle anyway, pass --accept-budget-miss (the manifest records the miss and `edgeformer check` shows it)."
    )


def verdict_rows(config: dict[str, Any], tokenizer: str | None, path: Any, n: int, static_length: int | None) -> list:
    """The held-out rows the verdict judges: ``n`` rows of up to 128 tokens, and, when the bundle
    claims longer sequences (its config's maximum, or its fixed length), a few rows at that length,
    where trained weights' outlier activations show. A validation file's own rows are the rows."""
    rows = [calibration.load_rows(config, tokenizer, path=path, split="valid", n=n, seed=1)]
    longest = static_length or int(config["max_positions"])
    if path is None and longest > rows[0].ids.shape[1]:
        rows.append(calibration.load_rows(config, tokenizer, split="valid", n=min(n, 4), length=longest, seed=2))
    return rows


def rows_text(kind: str, rows: list, given: bool) -> str:
    text = f"{kind}: " + " + ".join(r.source for r in rows)
    if not given and rows[0].source.startswith("random"):
        text += f" (give --{kind} FILE.npz for real data)"
    return text


def model_config(manifest: dict[str, Any], src: Path) -> dict[str, Any]:
    """The manifest's model config, with the fields calibration reads checked: quantize measures
    the budget on token rows, so it needs the vocabulary size and the longest sequence."""
    config = manifest.get("config")
    if not isinstance(config, dict) or not config:
        raise QuantizeError(
            f"{src}/manifest.json has no model config: quantize takes bundles of edgeformer models "
            "(a bundle of a factory's own module has none); export the model with an edgeformer card"
        )
    for key, low in (("vocab_size", 1), ("max_positions", 1), ("pad_token_id", None)):
        value = config.get(key, 0 if low is None else None)
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            raise QuantizeError(
                f"{src}/manifest.json: config.{key} must be an integer{f' >= {low}' if low else ''}, got {value!r:.40}"
            )
    return config


def quantize_bundle(
    src: str | Path,
    out: str | Path,
    *,
    precision: str = "int8",
    mode: str = "dynamic",
    method: str = "minmax",
    calibration_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    budget: dict[str, float] | None = None,
    samples: int = 32,
    target_name: str | None = None,
    force: bool = False,
    accept_budget_miss: bool = False,
    log: Log = lambda _m: None,
    cases: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """Quantize the fp32 bundle ``src`` into a new bundle ``out``, written atomically
    (``edgeformer quantize``; the settings as in ``quantize_into``)."""
    src, out = Path(src), Path(out)
    refuse_overlap(src, out, QuantizeError)
    check_bundle_output(out, force, ExportError)  # before the work: refused now, not after minutes
    with new_bundle_dir(out, force) as tmp:
        manifest = quantize_into(
            src, tmp, scratch_beside=out, precision=precision, mode=mode, method=method,
            calibration_file=calibration_file, validation_file=validation_file, budget=budget, samples=samples,
            target_name=target_name, accept_budget_miss=accept_budget_miss, log=log, cases=cases,
        )  # fmt: skip
        write_manifest(tmp, manifest)
    return manifest


def quantize_into(
    src: Path,
    tmp: Path,
    *,
    scratch_beside: Path,
    precision: str = "int8",
    mode: str = "dynamic",
    method: str = "minmax",
    calibration_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    budget: dict[str, float] | None = None,
    samples: int = 32,
    target_name: str | None = None,
    accept_budget_miss: bool = False,
    log: Log = lambda _m: None,
    cases: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """The quantize stage: the reduced graphs, the files and the verdict rows of ``src`` written into
    ``tmp`` (a bundle being written); returns its manifest, not yet written (the driver adds the
    torch check and packaging first). A miss of the budget raises BudgetMissError unless
    ``accept_budget_miss``. ``cases`` (graph name -> ``parity.BudgetCase``): the shapes the final
    parity check will judge, with the torch outputs on them; the search meets the budget on them
    too, and a miss there is a miss of the verdict (nothing written), named by its shape."""
    read = read_checked(src)
    step = _pass(read.manifest, src, precision, mode, method, calibration_file)
    budget = budgets.budget_for(precision, budget)
    rows = _rows(read.manifest, src, calibration_file, validation_file, samples, budget, log)
    report = _report(step, budget, rows)
    with scratch_dir(scratch_beside) as scratch:
        verdicts = []
        for name, graph in read.typed.graphs.items():
            trial = scratch / graph.file
            report["graphs"][name], graph_verdict = _quantize_graph(
                step, read.manifest, name, src, trial, rows, (cases or {}).get(name, []), log
            )
            verdicts.append(graph_verdict)
            shutil.copyfile(trial, tmp / graph.file)
        verdict = combine(
            verdicts, tried="; ".join(f"{n}: {v.tried}" for n, v in zip(read.typed.graphs, verdicts, strict=True))
        )
        verdict.accepted = accept_budget_miss and not verdict.ok
        if not verdict.ok and not accept_budget_miss:
            raise BudgetMissError(budget_miss_message(verdict, calibration_file is not None), verdict)
        verdict.rows_file = write_rows(tmp, rows.valid_rows, log)  # for `check` to judge them again
        report["verdict"] = verdict.to_dict()
        files = [g.file for g in read.typed.graphs.values()] + ([verdict.rows_file] if verdict.rows_file else [])
        files = copy_rest(src, tmp, read.typed.files, files)
    target = dict(read.typed.target or {})
    target.update(precision=precision, name=target_name or f"{target.get('name', 'bundle')}-{precision}")
    target.update({"quantization": mode} if precision == "int8" else {})
    reduced = dataclasses.replace(
        read.typed, precision=precision, target=target | {"budget": budget}, quantization=report,
        accepted_budget_miss=verdict.to_dict() if verdict.accepted else None, files=file_hashes(tmp, files),
        parity=None,  # measured on the float graphs; `edgeformer check` measures it again
    )  # fmt: skip
    return reduced.to_dict()


@dataclass
class Rows:
    """The rows the stage measures on: calibration (the search) and validation (the verdict)."""

    calib_text: str
    valid_text: str
    valid_rows: list
    judged: dict[str, float]  # the budget applied
    calib_feeds: dict[str, list[dict[str, Any]]]
    valid_feeds: dict[str, list[dict[str, Any]]]
    lengths: list[int]


def _pass(
    manifest: dict[str, Any], src: Path, precision: str, mode: str, method: str, calibration_file: Any
) -> QuantizePass:
    """The pass for the request, after refusing what cannot be quantized as asked."""
    if manifest.get("precision", "fp32") != "fp32":
        raise QuantizeError(f"{src} is already {manifest['precision']}; quantize the fp32 bundle it came from")
    step = pass_for(precision, mode, method)
    model_config(manifest, src)
    if "calibration_rows" in step.needs and calibration_file is None and manifest.get("tokenizer") != "bytes":
        raise QuantizeError(
            "static int8 needs calibration data: give --calibration FILE.npz (input_ids, attention_mask)"
        )
    return step


def _rows(
    manifest: dict[str, Any], src: Path, calibration_file: Any, validation_file: Any, samples: int,
    budget: dict[str, float], log: Log,
) -> Rows:  # fmt: skip
    config, tokenizer = model_config(manifest, src), manifest.get("tokenizer")
    calib = calibration.load_rows(config, tokenizer, path=calibration_file, split="train", n=samples)
    valid_rows = verdict_rows(config, tokenizer, validation_file, samples, _static_length(manifest))
    calib_text = rows_text("calibration", [calib], calibration_file is not None)
    valid_text = rows_text("validation", valid_rows, validation_file is not None)
    log(f"{calib_text}; {valid_text}")
    judged = budget
    if calib.source.startswith("random") or valid_rows[0].source.startswith("random"):
        # random tokens make near-tie logits: top-1 agreement and perplexity there mean nothing
        judged = {k: v for k, v in budget.items() if k == "cosine"}
        log(f"  random calibration tokens: only the cosine budget is applied ({judged})")
    graphs = manifest["graphs"]
    # an encoder-decoder's decoder feeds come from the float encoder; no float session outlives the feeds
    encoder = _session(src / graphs["encoder"]["file"]) if "encoder" in graphs and "decoder" in graphs else None
    calib_feeds = calibration.graph_feeds(manifest, calib, encoder_session=encoder)
    valid_feeds: dict[str, list[dict[str, Any]]] = {name: [] for name in graphs}
    for group in valid_rows:
        for name, feeds in calibration.graph_feeds(manifest, group, encoder_session=encoder).items():
            valid_feeds[name] += feeds
    lengths = sorted({f["input_ids"].shape[1] for fs in valid_feeds.values() for f in fs if "input_ids" in f})
    return Rows(calib_text, valid_text, valid_rows, judged, calib_feeds, valid_feeds, lengths)


def _report(step: QuantizePass, budget: dict[str, float], rows: Rows) -> dict[str, Any]:
    return {
        "precision": step.precision,
        "mode": step.mode,
        "method": step.method,
        "settings": step.settings(),
        "budget": budget,
        "budget_applied": rows.judged,
        "calibration": rows.calib_text,
        "validation": rows.valid_text,
        "reference": "the fp32 bundle's graphs (equal to the torch source within 1e-4, see its parity)",
        "graphs": {},
    }


def _quantize_graph(
    step: QuantizePass, manifest: dict[str, Any], name: str, src: Path, trial: Path, rows: Rows,
    cases: list[Any], log: Log,
) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """One graph through the pass into ``trial``: its report entry and its verdict."""
    file = manifest["graphs"][name]["file"]
    log(f"quantizing {file} ({step.precision}{', ' + step.mode if step.precision == 'int8' else ''}) ...")
    language_model = is_language_model(manifest, name)
    result = step.run(
        int8.name_nodes(onnx.load(str(src / file))), trial, rows.calib_feeds[name], rows.judged,
        language_model=language_model, log=log, verdict_feeds=rows.valid_feeds[name], cases=cases,
    )  # fmt: skip
    search, valid = result.search, rows.valid_feeds[name]
    session = _session(trial)  # the written graph, for its provider (and its validation, unless the search judged it)
    validation = search.verdict_measured  # the search's last judgement: the graph written, on these rows
    if not validation:
        validation = budgets.measure(
            outputs_of(_session(src / file), valid), outputs_of(session, valid), valid, language_model=language_model
        )
    verdict = judge(
        validation, rows.judged, precision=step.precision, rows=rows.valid_text, lengths=rows.lengths,
        provider=session.get_providers()[0], tried=search.tried_text(),
    )  # fmt: skip
    del session
    verdict.misses = [f"{name} {m}" for m in verdict.misses + search.case_misses]
    verdict.ok = not verdict.misses
    size_before = sum((src / f).stat().st_size for f in manifest["files"] if f.startswith(file))
    size_after = trial.stat().st_size
    entry = search.to_dict() | {
        "within_budget": verdict.ok,  # the verdict's, on the validation rows
        "within_budget_on_calibration": search.within_budget,
        "validation": budgets.to_jsonable(validation),
        "validation_within_budget": verdict.ok,
        "bytes_before": size_before,
        "bytes_after": size_after,
        "size_ratio": round(size_after / size_before, 4),
        "int8_attention_blocks": qattention.count(trial),
        "float_weight_bytes": result.float_weight_bytes,  # read at full width per run
    }
    if cases:  # the final parity check's shapes, judged by the search against torch
        entry["parity_cases"] = {"shapes": len(cases), "worst": search.case_measured}
        entry["parity_cases_misses"] = search.case_misses
        log(f"  the parity check's {len(cases)} shapes against torch: worst {search.case_measured}")
    entry |= result.entry
    log(
        f"  {size_before / 1e6:.1f} MB -> {size_after / 1e6:.1f} MB ({entry['size_ratio']:.0%}); "
        f"{len(result.kept_in_float)} node(s) kept in float; validation {budgets.to_jsonable(validation)}"
    )
    log(f"  {verdict.line()}")
    return entry, verdict


def copy_rest(src: Path, tmp: Path, listed: dict[str, str], files: list[str]) -> list[str]:
    """Copy every file ``src`` lists that no written file covers; returns ``files`` and them."""
    files = list(files)
    for name in listed:
        if name not in files and not any(name.startswith(f) for f in files):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # a listed file in a subfolder
            shutil.copy2(src / name, tmp / name)
            files.append(name)
    return files


def _static_length(manifest: dict[str, Any]) -> int | None:
    """The fixed sequence length of a static-shape bundle's graphs, if any."""
    for graph in manifest["graphs"].values():
        for spec in graph.get("inputs", []):
            shape = spec.get("shape") or []
            if spec.get("name") == "input_ids" and len(shape) == 2 and isinstance(shape[1], int):
                return shape[1]
    return None

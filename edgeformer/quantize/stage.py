"""Quantize a bundle into a new bundle: every graph, within an accuracy budget, with a report.

    quantize_bundle("gpt-mini-cpu-fp32/", "gpt-mini-cpu-int8/", precision="int8")

The float bundle's own graphs are the reference (its manifest proves them equal to the torch
source within 1e-4): the budget metrics are measured against them on calibration rows while
choosing what stays in float, then on held-out validation rows for the report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx

from edgeformer import budget as budgets
from edgeformer.config import QUANTIZATION_MODES
from edgeformer.errors import EdgeformerError, ExportError
from edgeformer.export.manifest_read import read_manifest
from edgeformer.export.manifest_write import file_hashes, new_bundle_dir, write_manifest
from edgeformer.io import scratch_dir
from edgeformer.ownership import check_bundle_output
from edgeformer.paths import refuse_overlap
from edgeformer.quantize import calibration, half_storage, int4_rank, int8, qattention, tied_head, weights
from edgeformer.quantize.mixed import _session, outputs_of, quantize_within_budget, weight_params
from edgeformer.quantize.verdict_rows import language_model as is_language_model
from edgeformer.quantize.verdict_rows import write_rows
from edgeformer.verdict import combine, judge

Log = Callable[[str], None]
MODES = QUANTIZATION_MODES


class QuantizeError(EdgeformerError):
    """A bundle that cannot be quantized as asked."""


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


def _quantizer(
    precision: str,
    mode: str,
    method: str,
    feeds: list,
    heads: list[tied_head.TiedHead],
    attention: list[qattention.Block],
) -> Callable[..., Path]:
    if precision == "int8" and mode == "dynamic":
        shared = [g for head in heads for g in head.gathers]  # they read the head's int8 table
        reduce_range = int8.needs_reduce_range()

        def dynamic(m: onnx.ModelProto, o: Path, exclude: Sequence[str] = ()) -> Path:
            m, _ = qattention.apply(m, attention, exclude=exclude, reduce_range=reduce_range)
            int8.quantize_dynamic(m, o, exclude=[*exclude, *shared], reduce_range=reduce_range)
            tied_head.share_quantized(o, heads)
            half_storage.store_half(o)  # what stayed in float, at half the bytes on disk
            return o

        return dynamic
    if precision == "int8":

        def static(m: onnx.ModelProto, o: Path, exclude: Sequence[str] = ()) -> Path:
            int8.quantize_static(m, o, feeds, method=method, exclude=exclude)
            half_storage.store_half(o)
            return o

        return static
    if precision == "int4":
        chosen = weights.int4_settings()
        return lambda m, o, exclude=(): weights.to_int4(m, o, exclude=tuple(exclude), settings=chosen)
    return lambda m, o, exclude=(): weights.to_fp16(m, o)


def _int4_nodes(path: Path, candidates: list[str], kept: list[dict[str, Any]]) -> list[str]:
    """The nodes the written graph holds in int4, after checking it against the search's report:
    every node the report keeps in float is a float MatMul there, every other candidate is int4."""
    floats = {k["node"] for k in kept}
    layout = weights.int4_layout(onnx.load(str(path), load_external_data=False).graph, candidates)
    wrong = [f"{n}: {have} (reported {'float' if n in floats else 'int4'})" for n, have in layout.items()
             if have != ("float" if n in floats else "int4")]  # fmt: skip
    if wrong:
        raise QuantizeError(
            f"the int4 graph written is not the one the search reported ({len(wrong)} node(s): "
            f"{'; '.join(wrong[:5])}); this is a bug in edgeformer: please report it"
        )
    return [n for n, have in layout.items() if have == "int4"]


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
    manifest = read_manifest(src)
    if manifest.get("precision", "fp32") != "fp32":
        raise QuantizeError(f"{src} is already {manifest['precision']}; quantize the fp32 bundle it came from")
    if precision not in ("int8", "int4", "fp16"):
        raise QuantizeError(f"precision {precision!r} is not one of int8, int4, fp16")
    if mode not in MODES:
        raise QuantizeError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if method not in int8.METHODS:
        raise QuantizeError(f"calibration method {method!r} is not one of {', '.join(int8.METHODS)}")
    config, tokenizer = model_config(manifest, src), manifest.get("tokenizer")
    if precision == "int8" and mode == "static" and calibration_file is None and tokenizer != "bytes":
        raise QuantizeError(
            "static int8 needs calibration data: give --calibration FILE.npz (input_ids, attention_mask)"
        )
    budget = budgets.budget_for(precision, budget)
    calib = calibration.load_rows(config, tokenizer, path=calibration_file, split="train", n=samples)
    static_length = _static_length(manifest)
    valid_rows = verdict_rows(config, tokenizer, validation_file, samples, static_length)
    calib_text = rows_text("calibration", [calib], calibration_file is not None)
    valid_text = rows_text("validation", valid_rows, validation_file is not None)
    log(f"{calib_text}; {valid_text}")
    judged = budget
    if calib.source.startswith("random") or valid_rows[0].source.startswith("random"):
        # random tokens make near-tie logits: top-1 agreement and perplexity there mean nothing
        judged = {k: v for k, v in budget.items() if k == "cosine"}
        log(f"  random calibration tokens: only the cosine budget is applied ({judged})")

    graphs = manifest["graphs"]
    float_sessions = {name: _session(src / g["file"]) for name, g in graphs.items()}
    encoder = float_sessions.get("encoder")
    calib_feeds = calibration.graph_feeds(manifest, calib, encoder_session=encoder)
    valid_feeds: dict[str, list[dict[str, Any]]] = {name: [] for name in graphs}
    for rows in valid_rows:
        for name, feeds in calibration.graph_feeds(manifest, rows, encoder_session=encoder).items():
            valid_feeds[name] += feeds
    lengths = sorted({f["input_ids"].shape[1] for fs in valid_feeds.values() for f in fs if "input_ids" in f})
    verdicts = []

    report: dict[str, Any] = {
        "precision": precision,
        "mode": mode if precision == "int8" else "weight-only",
        "method": method if precision == "int8" and mode == "static" else None,
        "settings": (
            int8.settings(static=mode == "static")
            | {"float_weights": half_storage.DESCRIPTION}
            | ({"attention": qattention.DESCRIPTION} if mode == "dynamic" else {})
            if precision == "int8"
            else weights.int4_settings()
            if precision == "int4"
            else {}
        ),
        "budget": budget,
        "budget_applied": None,
        "calibration": calib_text,
        "validation": valid_text,
        "reference": "the fp32 bundle's graphs (equal to the torch source within 1e-4, see its parity)",
        "graphs": {},
    }
    report["budget_applied"] = judged
    with scratch_dir(scratch_beside) as scratch:
        files = []
        for name, graph in graphs.items():
            log(f"quantizing {graph['file']} ({precision}{', ' + mode if precision == 'int8' else ''}) ...")
            path = src / graph["file"]
            model = int8.name_nodes(onnx.load(str(path)))
            language_model = is_language_model(manifest, name)
            heads: list[tied_head.TiedHead] = []
            if precision == "int4" or (precision == "int8" and mode == "dynamic"):
                model, heads = tied_head.untie(model)  # a tied LM head becomes a quantizable MatMul
            shared = {g for head in heads for g in head.gathers}
            static = precision == "int8" and mode == "static"  # QDQ reaches attention's own MatMuls too
            candidates = [c for c in int8.quantizable_nodes(model, static=static) if c not in shared]
            if precision == "int4":  # the MatMuls MatMulNBits replaces; Gathers stay float
                candidates = weights.int4_candidates(model)
            attention = qattention.plan(model, calib_feeds[name]) if precision == "int8" and mode == "dynamic" else []
            if attention:
                log(f"  {len(attention)} self-attention block(s) can run as one int8 QAttention each")
            quantize = _quantizer(precision, mode, method, calib_feeds[name], heads, attention)
            trial = scratch / graph["file"]
            result = quantize_within_budget(
                model,
                trial,
                quantize,
                calib_feeds[name],
                judged,
                candidates=candidates if precision != "fp16" else [],
                language_model=language_model,
                log=log,
                verdict_feeds=valid_feeds[name],
                rank=int4_rank.rank if precision == "int4" or (precision == "int8" and mode == "dynamic") else None,
                cases=(cases or {}).get(name, ()),
            )
            int4_nodes = _int4_nodes(trial, candidates, result.kept_in_float) if precision == "int4" else None
            validation = budgets.measure(
                outputs_of(float_sessions[name], valid_feeds[name]),
                outputs_of(_session(trial), valid_feeds[name]),
                valid_feeds[name],
                language_model=language_model,
            )
            shutil.copyfile(trial, tmp / graph["file"])
            files.append(graph["file"])
            size_before = sum((src / f).stat().st_size for f in manifest["files"] if f.startswith(graph["file"]))
            size_after = (tmp / graph["file"]).stat().st_size
            graph_cases = (cases or {}).get(name, [])
            graph_verdict = judge(
                validation,
                judged,
                precision=precision,
                rows=valid_text,
                lengths=lengths,
                provider=_provider(trial),
                tried=result.tried_text(),
            )
            graph_verdict.misses = [f"{name} {m}" for m in graph_verdict.misses + result.case_misses]
            graph_verdict.ok = not graph_verdict.misses
            verdicts.append(graph_verdict)
            entry = result.to_dict() | {
                "within_budget": graph_verdict.ok,  # the verdict's, on the validation rows
                "within_budget_on_calibration": result.within_budget,
                "validation": budgets.to_jsonable(validation),
                "validation_within_budget": graph_verdict.ok,
                "bytes_before": size_before,
                "bytes_after": size_after,
                "size_ratio": round(size_after / size_before, 4),
                "int8_attention_blocks": qattention.count(tmp / graph["file"]),
                # what the nodes kept in float read at full width per run (decoding is bound by weight reads)
                "float_weight_bytes": 4 * sum(weight_params(model, [k["node"] for k in result.kept_in_float]).values()),
            }
            if graph_cases:  # the final parity check's shapes, judged by the search against torch
                entry["parity_cases"] = {"shapes": len(graph_cases), "worst": result.case_measured}
                entry["parity_cases_misses"] = result.case_misses
                log(f"  the parity check's {len(graph_cases)} shapes against torch: worst {result.case_measured}")
            if int4_nodes is not None:  # what the graph holds in int4; every other candidate is kept_in_float
                entry["int4_nodes"] = int4_nodes
            report["graphs"][name] = entry
            kept = len(result.kept_in_float)
            log(
                f"  {size_before / 1e6:.1f} MB -> {size_after / 1e6:.1f} MB ({entry['size_ratio']:.0%}); "
                f"{kept} node(s) kept in float; validation {budgets.to_jsonable(validation)}"
            )
            log(f"  {graph_verdict.line()}")
        verdict = combine(verdicts, tried="; ".join(f"{n}: {v.tried}" for n, v in zip(graphs, verdicts, strict=True)))
        verdict.accepted = accept_budget_miss and not verdict.ok
        report["verdict"] = verdict.to_dict()
        if not verdict.ok and not accept_budget_miss:
            raise BudgetMissError(budget_miss_message(verdict, calibration_file is not None), verdict)
        verdict.rows_file = write_rows(tmp, valid_rows, log)  # for `check` to judge them again
        report["verdict"] = verdict.to_dict()
        files += [verdict.rows_file] if verdict.rows_file else []
        for name in manifest["files"]:
            if name not in files and not any(name.startswith(f) for f in files):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # a listed file in a subfolder
                shutil.copy2(src / name, tmp / name)
                files.append(name)
        manifest["precision"] = precision
        target = dict(manifest.get("target", {}))
        target.update(precision=precision, name=target_name or f"{target.get('name', 'bundle')}-{precision}")
        if precision == "int8":
            target["quantization"] = mode
        target["budget"] = budget
        manifest["target"] = target
        manifest["quantization"] = report
        manifest.pop("accepted_budget_miss", None)
        if verdict.accepted:
            manifest["accepted_budget_miss"] = verdict.to_dict()
        manifest["files"] = file_hashes(tmp, files)
        manifest.pop("parity", None)  # measured on the float graphs; `edgeformer check` measures it again
    return manifest


def _static_length(manifest: dict[str, Any]) -> int | None:
    """The fixed sequence length of a static-shape bundle's graphs, if any."""
    for graph in manifest["graphs"].values():
        for spec in graph.get("inputs", []):
            shape = spec.get("shape") or []
            if spec.get("name") == "input_ids" and len(shape) == 2 and isinstance(shape[1], int):
                return shape[1]
    return None


def _provider(path: Path) -> str:
    return _session(path).get_providers()[0]

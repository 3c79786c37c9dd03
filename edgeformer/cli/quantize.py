"""``edgeformer quantize``: an fp32 bundle into a reduced-precision bundle within an accuracy
budget (``edgeformer.quantize.stage.quantize_bundle``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeformer.cli.errors import friendly
from edgeformer.cli.options import (
    calibration_option,
    count,
    force_option,
    json_option,
    output_option,
    progress,
    quantizer_verbose,
    reduced_precision_options,
)
from edgeformer.io import json_text
from edgeformer.targets import CALIBRATION_METHODS, QUANTIZATION_MODES, REDUCED_PRECISIONS


def budget_option(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict[str, float]:
    """``--budget METRIC=VALUE`` (repeatable) as the budget ``edgeformer.budget.parse_budget`` reads."""
    from edgeformer.budget import parse_budget

    try:
        return parse_budget(items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None


def report_lines(report: dict[str, Any]) -> list[str]:
    """The quantization report in a manifest, as quantize prints it."""
    from edgeformer.verdict import Verdict

    lines = [
        f"{name}: {graph['bytes_before'] / 1e6:.1f} MB -> {graph['bytes_after'] / 1e6:.1f} MB "
        f"({graph['size_ratio']:.0%}), {len(graph['kept_in_float'])} node(s) in float"
        + (f", {len(graph['int8_nodes'])} kept at 8 bits" if "int8_nodes" in graph else "")  # int4's kept level
        + f"; validation {graph['validation']}"
        for name, graph in report["graphs"].items()
    ]
    return [*lines, f"{report['calibration']}; {report['validation']}", Verdict.from_dict(report["verdict"]).line()]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@output_option("Where to write (default: <bundle>-<precision>).")
@click.option(
    "--precision",
    type=click.Choice(REDUCED_PRECISIONS),
    default="int8",
    show_default=True,
    help="int8: weights and activations; int4: MatMul weights only (decoders); fp16: for GPU targets.",
)
@click.option(
    "--mode",
    type=click.Choice(QUANTIZATION_MODES),
    default="dynamic",
    show_default=True,
    help="int8 only. dynamic: activation ranges at run time; static: QDQ with ranges from calibration data.",
)
@click.option(
    "--method",
    type=click.Choice(CALIBRATION_METHODS),
    default="minmax",
    show_default=True,
    help="How static int8 turns calibration activations into ranges.",
)
@calibration_option(
    "Calibration data: an .npz with input_ids (and attention_mask), or a text file for byte-level models. "
    "Default for byte-level models: the standard library's docstrings; otherwise random tokens.",
)
@click.option("--validation", type=click.Path(dir_okay=False, path_type=Path), help="Held-out data for the report.")
@click.option(
    "--budget",
    "budget",
    multiple=True,
    callback=budget_option,
    metavar="METRIC=VALUE",
    help="Accuracy budget against fp32 (repeatable): cosine=0.999, top1=0.99, perplexity=1.02. Nodes are kept in "
    "float, most sensitive first, until it holds. Default: the precision's budget.",
)
@click.option("--samples", type=count(1, 1 << 16), default=32, show_default=True, help="Calibration rows.")
@force_option("Replace an existing output bundle.")
@reduced_precision_options
@json_option("Print the quantization report as JSON.")
@friendly
def quantize(
    bundle: Path,
    output: Path | None,
    precision: str,
    mode: str,
    method: str,
    calibration: Path | None,
    validation: Path | None,
    budget: dict[str, float],
    samples: int,
    force: bool,
    verbose: bool,
    accept_budget_miss: bool,
    as_json: bool,
) -> None:
    """Quantize an fp32 BUNDLE into a new bundle, within an accuracy budget.

    The fp32 graphs are the reference. Every quantizable node is tried; if the fully quantized
    graph breaks the budget on the calibration data, the fewest most sensitive nodes stay in float.
    The report (size, metrics on calibration and validation data, nodes kept in float and why) is
    printed and stored in the new bundle's manifest; `edgeformer check` judges it by the budget.
    The verdict is judged on held-out validation rows (up to the longest length the bundle takes):
    a miss exits 1 and writes nothing, unless --accept-budget-miss.
    """
    from edgeformer.paths import default_output
    from edgeformer.quantize.stage import quantize_bundle

    quantizer_verbose(verbose)
    out = output or default_output(bundle, precision)
    manifest = quantize_bundle(
        bundle,
        out,
        precision=precision,
        mode=mode,
        method=method,
        calibration_file=calibration,
        validation_file=validation,
        budget=budget,
        samples=samples,
        force=force,
        accept_budget_miss=accept_budget_miss,
        log=progress,
    )
    report = manifest["quantization"]
    click.echo(json_text(report) if as_json else "\n".join([*report_lines(report), f"wrote {out}"]))

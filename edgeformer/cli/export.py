"""``edgeformer export``: a model (card, card file, Hugging Face directory or module:factory) to a
checked ONNX bundle, through the driver (``edgeformer.pipeline.export_bundle``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeformer.cli.errors import friendly
from edgeformer.cli.options import (
    calibration_option,
    check_option,
    force_option,
    json_option,
    max_sequence_option,
    memory_check_option,
    output_option,
    progress,
    quantizer_verbose,
    reduced_precision_options,
    seed_option,
)
from edgeformer.io import json_text


def export_verdict(manifest: dict[str, Any]) -> str:
    """What export says of the bundle it wrote: the torch parity (and where it ran), and for a
    reduced precision the quantization verdict, both as recorded in the manifest."""
    from edgeformer.verdict import Verdict

    parity = manifest.get("parity")
    if not parity:
        said = "parity not checked (--no-check)"
    else:
        said = f"parity {'ok' if parity.get('ok') else 'NOT ok'} on {parity.get('provider') or 'unknown provider'}"
    recorded = (manifest.get("quantization") or {}).get("verdict")
    if recorded:
        said += f"; {Verdict.from_dict(recorded).line()}"
    return said


@click.command(name="export")
@click.argument("model", required=False, default="demo-decoder", metavar="[MODEL]")
@click.option(
    "-t", "--target", default="cpu-fp32", show_default=True, help="Target name (see export/) or a target .toml file."
)
@output_option("Bundle directory to write (default: ./<model>-<target>).")
@force_option("Replace an existing bundle directory.")
@check_option("Check parity against the torch source.")
@seed_option()
@max_sequence_option("Check parity up to this sequence length instead of the card's maximum (long-context cards).")
@click.option(
    "--io",
    "io_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML declaring a factory's inputs (names, dtypes, shapes with named dimensions).",
)
@memory_check_option()
@calibration_option(
    "int8 targets: real inputs for the accuracy budget and static ranges (.npz of input_ids / "
    "attention_mask, or a text file for byte-level models). [default: bundled text or random tokens]",
)
@reduced_precision_options
@json_option("Print the manifest as JSON when done.")
@click.option("--timings", is_flag=True, help="Print the seconds each stage took (also in the manifest's timings).")
@friendly
def export_cmd(
    model: str,
    target: str,
    output: Path | None,
    force: bool,
    check: bool,
    seed: int,
    max_sequence: int | None,
    io_file: Path | None,
    memory_check: bool,
    calibration: Path | None,
    verbose: bool,
    accept_budget_miss: bool,
    as_json: bool,
    timings: bool,
) -> None:
    """Export MODEL to an ONNX bundle and check it against the torch source.

    MODEL is a card name from `edgeformer models`, a path to a card .toml, a Hugging Face model
    directory (see `edgeformer import`), or `package.module:factory`; with no MODEL the shipped
    demo decoder is exported. The bundle is written atomically: an interrupted or failed export
    leaves any earlier bundle untouched.
    """
    from edgeformer.export.resolve import resolve_source
    from edgeformer.pipeline import export_bundle, timings_table
    from edgeformer.zoo import resolve_target

    quantizer_verbose(verbose)
    tgt = resolve_target(target)
    source = resolve_source(
        model, io_file=io_file, seed=seed, max_sequence=max_sequence, memory_check=memory_check, parity=check
    )
    out = output or Path(f"{source.name}-{tgt.name}")
    manifest = export_bundle(
        source,
        tgt,
        out,
        force=force,
        check=check,
        log=progress,
        calibration=calibration,
        accept_budget_miss=accept_budget_miss,
    )
    if as_json:
        click.echo(json_text(manifest))
        return
    click.echo(f"wrote {out}/ ({', '.join(manifest['files'])}); {export_verdict(manifest)}")
    if timings:
        click.echo("\n".join(timings_table(manifest.get("timings") or {})))

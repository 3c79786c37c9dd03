"""``edgeformer check``: a bundle against the torch source it was exported from
(``edgeformer.verify_bundle.check_bundle``); what the report means for the exit status is decided
in ``edgeformer.check_outcome``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgeformer.cli.errors import friendly
from edgeformer.cli.options import (
    count,
    json_option,
    max_sequence_option,
    memory_check_option,
    merge_providers,
    progress,
    providers_option,
)
from edgeformer.io import json_text

if TYPE_CHECKING:
    from edgeformer.check_outcome import Outcome


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--steps", type=count(0), default=32, show_default=True, help="Greedy tokens to compare (decoders).")
@click.option(
    "--inputs",
    "npz",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Real inputs: an .npz with input_ids (and optionally attention_mask, ...).",
)
@click.option("--text", help="Real input text, for byte-level models (the demo models).")
@max_sequence_option("Check up to this sequence length instead of the card's maximum (long-context cards).")
@memory_check_option()
@providers_option(
    "The graphs run there strictly: one that this onnxruntime lacks or that fails to start is an error, "
    "never a silent fallback.",
    default="cpu",
)
@click.option(
    "--factory",
    metavar="MODULE:FUNCTION",
    help="The torch source of a bundle exported from your own module: edgeformer never imports code because "
    "a bundle names it, so name it here to have torch parity checked (the bundle records which one).",
)
@click.option(
    "--expect-sha256",
    "expect_sha256",
    metavar="HEX",
    help="The manifest's sha256 as the sender gave it to you (check prints it): pins the whole bundle.",
)
@click.option(
    "--require-torch-parity",
    is_flag=True,
    help="Exit with 1 when torch parity cannot be checked (a user's source without --factory); for CI gates.",
)
@click.option(
    "--accept-budget-miss",
    is_flag=True,
    help="Exit 0 for a bundle whose budget miss was accepted at export/quantize (it is still reported).",
)
@json_option("Print the full report as JSON.")
@friendly
def check(
    bundle: Path,
    steps: int,
    npz: Path | None,
    text: str | None,
    max_sequence: int | None,
    memory_check: bool,
    providers: tuple[str, ...] | None,
    provider_alias: tuple[str, ...] | None,
    factory: str | None,
    expect_sha256: str | None,
    require_torch_parity: bool,
    accept_budget_miss: bool,
    as_json: bool,
) -> None:
    """Check a bundle against the torch source it was exported from.

    Reports, per output and shape, the max absolute and relative error and the cosine similarity
    against the precision's tolerance, and for decoders whether greedy generation gives the same
    tokens. Exits with 1 when the check fails. Every report names the execution provider it ran on.

    A reduced-precision bundle is also judged by the quantization verdict its manifest records
    (held-out rows, the same judge as export and quantize): a miss written with
    --accept-budget-miss is shown as "budget NOT met (accepted at export: ...)" and exits 1 unless
    --accept-budget-miss is given to check too.

    A bundle exported from your own module (MODULE:FUNCTION) names code, which check does not
    import unless you pass --factory: without it, check verifies the manifest's and every file's
    sha256, the graphs against the IO spec, that they run with finite outputs, and the parity
    recorded at export; it prints "torch parity NOT checked" and exits 0 when all of that passed
    (1 with --require-torch-parity); the JSON report says "torch_parity": "not checked".
    """
    from edgeformer.check_outcome import check_outcome
    from edgeformer.errors import ParityError
    from edgeformer.parity import read_real_inputs
    from edgeformer.verify_bundle import check_bundle

    providers = merge_providers(providers, provider_alias) or ("cpu",)
    real = read_real_inputs(bundle, npz=npz, text=text) if npz or text is not None else None
    try:
        report = check_bundle(
            bundle,
            generation_steps=steps,
            real_inputs=real,
            max_sequence=max_sequence,
            log=progress,
            memory_check=memory_check,
            providers=providers,
            factory=factory,
            expect_manifest_sha256=expect_sha256,
        )
    except ParityError as exc:
        if as_json and exc.report is not None:  # (none when the check could not run: its inputs were refused)
            click.echo(json_text(exc.report.to_dict()))
        raise
    outcome = check_outcome(report, require_torch_parity=require_torch_parity, accept_budget_miss=accept_budget_miss)
    show(outcome, report.to_dict() if as_json else None)


def show(outcome: Outcome, as_json: dict[str, Any] | None) -> None:
    """The report as JSON (``as_json``), else the outcome's lines; then the outcome's error, if any."""
    if as_json is not None:
        click.echo(json_text(as_json))
    else:
        for line, err in outcome.lines:
            click.echo(line, err=err)
    if outcome.error is not None:
        raise outcome.error

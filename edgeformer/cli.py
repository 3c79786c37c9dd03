"""The ``edgeformer`` command. Each command is a thin call into the library; every EdgeformerError
becomes a one-paragraph message and exit code 1 (click's usage errors exit with 2)."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from edgeformer import __version__
from edgeformer.benchmark.options import OPTIONS as BENCH_OPTIONS
from edgeformer.benchmark.options import Option as BenchOption
from edgeformer.benchmark.options import help_text, limits_from_values, settings_from_values, value_text
from edgeformer.cli_errors import friendly
from edgeformer.cli_types import (
    COUNT_LIMIT,
    FiniteFloatRange,
    count,
    merge_providers,
    providers_option,
    seed_option,
)
from edgeformer.io import json_text
from edgeformer.targets import FUSION_FORMS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeformer")
def main() -> None:
    """edgeformer: Transformer models from PyTorch to devices.

    Model cards (TOML) describe the architectures; `edgeformer models` lists the shipped ones.
    """
    warnings.formatwarning = _plain_warning


_python_warning = warnings.formatwarning


def _plain_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """edgeformer's own warnings (an unverifiable manifest) as one line, without a source line."""
    from edgeformer.runtime.errors import UnverifiedManifestWarning

    if issubclass(category, UnverifiedManifestWarning):
        return f"warning: {message}\n"
    return _python_warning(message, category, *args, **kwargs)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the zoo as JSON instead of a table.")
@friendly
def models(as_json: bool) -> None:
    """List the shipped model cards: name, family, shape, parameters and fp32 size."""
    from edgeformer.zoo import list_cards, parameter_count

    rows: list[dict[str, Any]] = []
    for card in list_cards():
        cfg = card.config
        params = parameter_count(cfg)
        rows.append(
            {
                "name": card.name,
                "family": cfg.family,
                "layers": cfg.n_layers,
                "decoder_layers": cfg.decoder_layers if cfg.family == "encoder-decoder" else None,
                "d_model": cfg.d_model,
                "heads": cfg.n_heads,
                "attention": cfg.attention,
                "parameters": params,
                "size_fp32_bytes": params * 4,
                "trained": card.checkpoint is not None,
                "metrics": card.metrics,
            }
        )
    if as_json:
        click.echo(json_text(rows))
        return
    header = ("name", "family", "layers", "width", "heads", "attention", "params", "size fp32", "weights")
    table = [
        (
            r["name"],
            r["family"],
            f"{r['layers']}+{r['decoder_layers']}" if r["decoder_layers"] is not None else str(r["layers"]),
            str(r["d_model"]),
            str(r["heads"]),
            r["attention"],
            f"{r['parameters'] / 1e6:.1f} M",
            _human_bytes(r["size_fp32_bytes"]),
            "trained" if r["trained"] else "random",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _recipe_options(f: Any) -> Any:
    """The knobs of a training recipe; each overrides the card's [training] value of the same name."""
    from edgeformer.cli_types import FiniteFloatRange
    from edgeformer.nn.training import PRECISIONS, SCHEDULES

    unit = FiniteFloatRange(0, 1, max_open=True)
    open_unit = FiniteFloatRange(0, 1, min_open=True, max_open=True)
    options = [
        click.option("--steps", type=count(1, 10**8), help="Optimizer steps."),
        click.option("--batch-size", "batch_size", type=count(1, 4096), help="Sequences per micro-batch."),
        click.option("--grad-accum", "grad_accum", type=count(1, 4096), help="Micro-batches per optimizer step."),
        click.option("--lr", type=FiniteFloatRange(0, 10, min_open=True, max_open=True), help="Peak learning rate."),
        click.option("--schedule", type=click.Choice(SCHEDULES), help="Learning-rate schedule after warmup."),
        click.option("--warmup", "warmup_steps", type=count(0, 10**8), help="Warmup steps."),
        click.option("--weight-decay", "weight_decay", type=FiniteFloatRange(0, 1), help="AdamW weight decay."),
        click.option("--adam-betas", "betas", type=(unit, unit), help="Adam beta1 beta2 (the paper: 0.9 0.98)."),
        click.option("--adam-eps", "eps", type=open_unit, help="Adam epsilon."),
        click.option("--grad-clip", "grad_clip", type=FiniteFloatRange(0, 1e6, min_open=True), help="Clip norm."),
        click.option("--dropout", type=unit, help="Dropout (default: the card's)."),
        click.option("--attention-dropout", "attention_dropout", type=unit, help="Attention dropout."),
        click.option("--label-smoothing", "label_smoothing", type=unit, help="Label smoothing (the paper: 0.1)."),
        click.option("--checkpoint-every", "checkpoint_every", type=count(0, 10**8), help="Steps between checkpoints."),
        click.option("--log-every", "log_every", type=count(1, 10**8), help="Steps between progress lines."),
        click.option("--precision", type=click.Choice(PRECISIONS), help="bf16: autocast the forward pass."),
        click.option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            "gradient_checkpointing",
            default=None,
            help="Recompute activations in the backward pass (less memory, more time).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command(name="train")
@click.argument("card_name", metavar="CARD", required=False)
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path), help="Training data (repeatable).")
@click.option("--valid", "valid", multiple=True, type=click.Path(path_type=Path), help="Held-out data (repeatable).")
@click.option("--init", type=click.Path(path_type=Path), help="Start from these weights (file, card, or directory).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="Continue the run in this -o DIR.")
@_recipe_options
@seed_option("Override the training recipe's seed.", default=None)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="New directory for the trained card and checkpoint (default: ./<card>-trained).",
)
@click.option("--out-dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)
@click.option("--force", is_flag=True, help="Replace an earlier training output directory (nothing else).")
@friendly
def train_cmd(
    card_name: str | None,
    data: tuple[Path, ...],
    valid: tuple[Path, ...],
    init: Path | None,
    resume: Path | None,
    output: Path | None,
    out_dir: Path | None,
    force: bool,
    **recipe: Any,
) -> None:
    """Train CARD on --data files (or, for demo-decoder and demo-encoder without --data, re-run the
    card's demo recipe on this Python's standard library docstrings).

    \b
    decoder:          text files (language modelling)
    encoder:          JSONL {"text", "label"} or CSV text,label (classification)
    encoder-decoder:  JSONL {"source", "target"} or TSV source<TAB>target

    The recipe is the card's [training] table, each flag overriding its key. Writes a new directory
    (default ./<card>-trained): the card with the held-out metrics (--valid) and the recipe as run,
    its safetensors weights, log.jsonl and, with --checkpoint-every, checkpoint/ for --resume DIR.
    `edgeformer export DIR/<card>.toml` takes it from there. The shipped cards are never changed.
    """
    from edgeformer.zoo import resolve_card

    if out_dir is not None:
        click.echo("--out-dir is deprecated; use -o/--output", err=True)
    if resume is not None:
        from edgeformer.fit import resume_training

        click.echo(json_text(resume_training(resume, echo=lambda line: click.echo(line, err=True))))
        return
    if card_name is None:
        raise click.UsageError("give a CARD (or --resume DIR)")
    card = resolve_card(card_name)
    out = output or out_dir or Path(f"{card.name}-trained")
    overrides = {k: v for k, v in recipe.items() if v is not None}
    if data:
        from edgeformer.fit import train_card

        result = train_card(card, out, data=list(data), valid=list(valid), overrides=overrides, init=init,
                            force=force, echo=lambda line: click.echo(line, err=True))  # fmt: skip
        if result:  # under torchrun only rank 0 reports
            click.echo(json_text(result))
        return
    _train_demo(card, out, overrides, force)


def _train_demo(card: Any, out: Path, overrides: dict[str, Any], force: bool) -> None:
    from edgeformer.demo import write_trained

    if card.path is None or card.checkpoint is None or card.training.get("task") is None:
        raise click.ClickException(
            f"card {card.name!r} has no demo recipe to re-run; give --data FILE (text, JSONL, CSV or TSV) to train it"
        )
    unsupported = sorted(set(overrides) - {"steps", "seed"})
    if unsupported:
        flag = unsupported[0].replace("_", "-")
        raise click.ClickException(f"--{flag} needs --data (a demo recipe takes --steps and --seed)")

    def log(step: int, loss: float, lr: float) -> None:
        click.echo(f"step {step + 1:>5}  loss {loss:.4f}  lr {lr:.2e}", err=True)

    steps, seed = overrides.get("steps"), overrides.get("seed")
    click.echo(json_text(write_trained(card, out, steps=steps, seed=seed, force=force, log=log)))


@main.command(name="import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Card to write (default: ./<directory name>.toml); the checkpoint and tokenizer go beside it.",
)
@click.option("--name", help="The card's name (default: the directory's name).")
@click.option("--force", is_flag=True, help="Replace an earlier import's card and its files (nothing else).")
@click.option(
    "--memory-check/--no-memory-check",
    default=True,
    show_default=True,
    help="Refuse, from config.json, a model larger than the available memory before reading weights.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@friendly
def import_cmd(
    directory: Path, output: Path | None, name: str | None, force: bool, memory_check: bool, as_json: bool
) -> None:
    """Import a pretrained Hugging Face model DIRECTORY as an edgeformer card and checkpoint.

    DIRECTORY holds config.json and model.safetensors (or pytorch_model.bin, loaded without running
    code). BERT, GPT-2, BART and sentence-transformers directories of BERT are imported; nothing is
    downloaded. Writes CARD.toml, CARD.safetensors (edgeformer's tensor names) and, when the
    directory has tokenizer.json, CARD.tokenizer.json; `edgeformer export CARD.toml` takes it from there.
    """
    from edgeformer.config import check_card_name
    from edgeformer.importers import MemoryPlan, card_name, import_directory, write_card

    if name is not None:
        check_card_name(name, "--name")
    imported = import_directory(directory, name=name, memory=MemoryPlan() if memory_check else None)
    out = output or Path(f"{name or card_name(directory)}.toml")
    card = write_card(imported, out, force=force)
    report = {
        "card": str(out),
        "name": card.name,
        "architecture": imported.architecture,
        "family": card.config.family,
        "checkpoint": str(card.checkpoint),
        "tokenizer": card.tokenizer or None,
        "parameters": sum(p.numel() for p in imported.model.parameters()),
        "ignored": imported.ignored,
    }
    if as_json:
        click.echo(json_text(report))
        return
    for tensor, why in imported.ignored.items():
        click.echo(f"ignored {tensor}: {why}", err=True)
    extra = f", {card.tokenizer}" if card.tokenizer else ""
    click.echo(
        f"wrote {out} ({imported.architecture} -> {card.config.family}, {report['parameters']:,} parameters; "
        f"{card.checkpoint.name if card.checkpoint else ''}{extra})"
    )


def reduced_precision_options(fn: Any) -> Any:
    """--verbose and --accept-budget-miss, shared by export and quantize."""
    fn = click.option(
        "--accept-budget-miss",
        is_flag=True,
        help="Write the bundle even when it misses its accuracy budget (otherwise: exit 1, nothing written); "
        "the manifest records the miss and `edgeformer check` shows it.",
    )(fn)
    return click.option(
        "--verbose", is_flag=True, help="Show onnxruntime's quantizer and calibrator messages (on stderr)."
    )(fn)


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _verbose(verbose: bool) -> None:
    """--verbose: onnxruntime's quantizer may speak (on stderr) until this command ends."""
    if verbose:
        from edgeformer.quantize.int8 import VERBOSE

        token = VERBOSE.set(True)
        click.get_current_context().call_on_close(lambda: VERBOSE.reset(token))


@main.command(name="export")
@click.argument("model", required=False, default="demo-decoder", metavar="[MODEL]")
@click.option(
    "-t", "--target", default="cpu-fp32", show_default=True, help="Target name (see export/) or a target .toml file."
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Bundle directory to write (default: ./<model>-<target>)."
)
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
@click.option("--check/--no-check", default=True, show_default=True, help="Check parity against the torch source.")
@seed_option()
@click.option(
    "--max-sequence",
    type=count(2),
    help="Check parity up to this sequence length instead of the card's maximum (long-context cards).",
)
@click.option(
    "--io",
    "io_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML declaring a factory's inputs (names, dtypes, shapes with named dimensions).",
)
@click.option(
    "--memory-check/--no-memory-check",
    default=True,
    show_default=True,
    help="Refuse, before building the model, a card whose estimated peak memory exceeds what the machine has.",
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False, path_type=Path),
    help="int8 targets: real inputs for the accuracy budget and static ranges (.npz of input_ids / "
    "attention_mask, or a text file for byte-level models). [default: bundled text or random tokens]",
)
@reduced_precision_options
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON when done.")
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
    from edgeformer.export.source import source_from_card, source_from_factory
    from edgeformer.export.user import load_io
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_card, resolve_target

    _verbose(verbose)
    tgt = resolve_target(target)
    if ":" in model and not Path(model).exists():
        source = source_from_factory(model, load_io(io_file) if io_file else None, seed=seed)
    elif Path(model).is_dir() and (Path(model) / "edgeformer-train.json").is_file():  # `edgeformer train` output
        from edgeformer.fit import card_in

        source = source_from_card(
            resolve_card(card_in(Path(model))), seed=seed, max_sequence=max_sequence, memory_check=memory_check,
            parity=check,
        )  # fmt: skip
    elif Path(model).is_dir():  # a pretrained Hugging Face directory
        from edgeformer.importers import source_from_directory

        source = source_from_directory(model, max_sequence=max_sequence, memory_check=memory_check, parity=check)
    else:
        source = source_from_card(
            resolve_card(model), seed=seed, max_sequence=max_sequence, memory_check=memory_check, parity=check
        )
    out = output or Path(f"{source.name}-{tgt.name}")
    manifest = export_bundle(
        source,
        tgt,
        out,
        force=force,
        check=check,
        log=_progress,
        calibration=calibration,
        accept_budget_miss=accept_budget_miss,
    )
    if as_json:
        click.echo(json_text(manifest))
        return
    click.echo(f"wrote {out}/ ({', '.join(manifest['files'])}); {_export_verdict(manifest)}")
    if timings:
        from edgeformer.pipeline import timings_table

        click.echo("\n".join(timings_table(manifest.get("timings") or {})))


def _export_verdict(manifest: dict[str, Any]) -> str:
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


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--steps", type=count(0), default=32, show_default=True, help="Greedy tokens to compare (decoders).")
@click.option(
    "--inputs",
    "npz",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Real inputs: an .npz with input_ids (and optionally attention_mask, ...).",
)
@click.option("--text", help="Real input text, for byte-level models (the demo models).")
@click.option(
    "--max-sequence",
    type=count(2),
    help="Check up to this sequence length instead of the card's maximum (long-context cards).",
)
@click.option(
    "--memory-check/--no-memory-check",
    default=True,
    show_default=True,
    help="Refuse, before building the model, a card whose estimated peak memory exceeds what the machine has.",
)
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
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
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
    from edgeformer.errors import ParityError
    from edgeformer.parity import ParityReport, read_real_inputs
    from edgeformer.verify_bundle import check_bundle

    providers = merge_providers(providers, provider_alias) or ("cpu",)
    real = read_real_inputs(bundle, npz=npz, text=text) if npz or text is not None else None
    try:
        report = check_bundle(
            bundle,
            generation_steps=steps,
            real_inputs=real,
            max_sequence=max_sequence,
            log=_progress,
            memory_check=memory_check,
            providers=providers,
            factory=factory,
            expect_manifest_sha256=expect_sha256,
        )
    except ParityError as exc:
        if as_json and exc.report is not None:  # (none when the check could not run: its inputs were refused)
            click.echo(json_text(exc.report.to_dict()))
        raise
    if as_json:
        click.echo(json_text(report.to_dict()))
    if not isinstance(report, ParityReport):  # verify_bundle.SourcelessReport: torch parity not checked
        _sourceless_outcome(report, require_torch_parity, as_json)
        return
    if not report.ok:  # only a bundle whose miss was accepted when written gets here
        if not as_json:
            click.echo(f"parity against the torch source on {report.provider}: budget NOT met", err=True)
    elif not as_json:
        worst = report.worst()
        error = worst.max_rel if worst else 0.0
        on = f" on {report.provider}"
        if report.budget is not None:
            click.echo(f"parity ok{on}: within the {report.precision} budget {report.budget} against the torch source")
        else:
            click.echo(f"parity ok{on}: worst error {error:.2e} of output scale, tolerance {report.tolerance:g}")
    _recorded_outcome(report, accept_budget_miss, as_json)


def _recorded_outcome(report: Any, accept: bool, as_json: bool) -> None:
    """The quantization verdict recorded in the manifest, and a miss accepted when it was written:
    shown, and exit 1 unless --accept-budget-miss is given to check too."""
    from edgeformer.quantize.stage import BudgetMissError
    from edgeformer.verdict import Verdict

    recorded = Verdict.from_dict(report.recorded_verdict) if report.recorded_verdict else None
    rejudged = Verdict.from_dict(report.rejudged_verdict) if report.rejudged_verdict else None
    accepted = report.accepted_budget_miss
    if not as_json:
        _verdict_lines(recorded, rejudged, report.rejudge_note)
    verdict = rejudged or recorded  # what check measured itself decides; a bundle without rows: what it records
    if not accepted:
        if verdict is None or verdict.ok:
            return
        # a miss nobody accepted: re-measured here, or an edited manifest / another tool's
        said = "the verdict re-measured by check misses" if rejudged else "the manifest records a budget miss"
        raise BudgetMissError(f"{said} and the miss was not accepted: {verdict.line()}", verdict)
    parity = [f"against torch at {c.dims}: {m}" for c in report.cases for m in c.violations]
    listed = (verdict.misses if verdict else []) + [m for m in (accepted or {}).get("misses", []) if isinstance(m, str)]
    missed = "; ".join(dict.fromkeys(listed + parity))
    line = f"budget NOT met (accepted at export: {missed or 'see the manifest'})"
    if accept:
        if not as_json:
            click.echo(f"{line}; exit 0 because --accept-budget-miss was given")
        return
    raise BudgetMissError(f"{line}; pass --accept-budget-miss to check to accept it here too", verdict)


def _verdict_lines(recorded: Any, rejudged: Any, note: str) -> None:
    """The verdict check measured on the bundle's verdict rows, beside the one recorded when written."""
    if rejudged is not None:
        click.echo(f"verdict re-measured on the bundle's {rejudged.rows_file}: {rejudged.line()}")
        pairs = [f"{k} {v:.6g} / {recorded.measured[k]:.6g}" for k, v in rejudged.measured.items()
                 if k in recorded.measured]  # fmt: skip
        said = "met" if recorded.ok else "NOT met"
        click.echo(f"  re-measured / recorded when written ({said}): {', '.join(pairs) or 'no common metric'}")
    elif recorded is not None:
        click.echo(f"recorded verdict ({note or 'as recorded'}): {recorded.line()}")


def _sourceless_outcome(report: Any, require_torch_parity: bool, as_json: bool) -> None:
    """Exit status of a check that could not rebuild the torch source (see ``check``)."""
    from edgeformer.errors import ParityError

    if not report.ok:
        failed = "; ".join(f"{k}: {v}" for k, v in report.checks.items() if v != "ok" and not v.startswith("none"))
        raise ParityError(f"the bundle failed what could be checked without its torch source: {failed}")
    if require_torch_parity:
        raise ParityError(f"torch parity NOT checked ({report.reason}) and --require-torch-parity was given")
    if not as_json:
        click.echo("bundle ok (files, IO spec, graphs run, finite outputs, recorded parity); torch parity NOT checked")


def _dim_sizes(specs: tuple[str, ...]) -> dict[str, int]:
    sizes = {}
    for spec in specs:
        name, _, size = spec.partition("=")
        if not name.strip() or not size.strip().isdigit() or not 1 <= int(size) <= COUNT_LIMIT:
            raise click.BadParameter(
                f"{spec!r}: give NAME=SIZE with a positive integer up to {COUNT_LIMIT:,}, e.g. sequence=128",
                param_hint="--dim",
            )
        sizes[name.strip()] = int(size)
    return sizes


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write (default: <name>.fused.onnx or <bundle>-fused).",
)
@click.option(
    "--form",
    type=click.Choice([f for f in FUSION_FORMS if f != "none"]),
    help="Which fused ops to produce: onnxruntime's contrib ops (MultiHeadAttention, SkipLayerNormalization, "
    "FastGelu...), standard ONNX ops only (opset 23 Attention) for other runtimes, or only the ops NNAPI, CoreML "
    "or QNN take (form (c); fix static shapes first for NNAPI). Default: contrib.",
)
@click.option(
    "--target", "target_name", help="Take the fused form and providers from this target (e.g. portable-fp32)."
)
@providers_option(
    "Where the graph will run: on onnxruntime's CPU kernels (cpu, xnnpack) layer norms stay LayerNormalization "
    "+ Add, faster there than SkipLayerNormalization. Default: the target's, else the bundle's, else cpu."
)
@click.option(
    "--dim",
    "dim_specs",
    multiple=True,
    metavar="NAME=SIZE",
    help="Size of a named input dimension in the per-pass parity check (repeatable), for a graph that "
    "only runs at some sizes, e.g. --dim sequence=128. Default: batch 2, sequence 7, past 3.",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing output (a bundle or .onnx file edgeformer wrote; nothing else)."
)
@click.option("--debug", is_flag=True, help="Print the pattern matcher's reasons for every block left unfused.")
@click.option("--json", "as_json", is_flag=True, help="Print the fusion report as JSON.")
@friendly
def fuse(
    source: Path,
    output: Path | None,
    form: str | None,
    target_name: str | None,
    providers: tuple[str, ...] | None,
    provider_alias: tuple[str, ...] | None,
    dim_specs: tuple[str, ...],
    force: bool,
    debug: bool,
    as_json: bool,
) -> None:
    """Fuse attention, layer norm and GELU in SOURCE: an .onnx file (from any exporter) or a bundle.

    Passes run in a fixed order; after each one the graph is run under onnxruntime and compared
    with the unfused graph, so a pass that changes the numbers is named. The report counts every
    fusion, compares the blocks in the graph with the fused ops, and says why any block did not fuse.
    """
    from edgeformer.fusions.standalone import fuse_bundle, fuse_file, print_report
    from edgeformer.paths import default_output

    providers = merge_providers(providers, provider_alias)
    if providers is not None:
        from edgeformer.runtime.providers import PROVIDERS

        unknown = [p for p in providers if p not in PROVIDERS]
        if unknown:
            raise click.UsageError(
                f"--providers {','.join(providers)!r}: unknown {unknown[0]}; "
                f"give names from {', '.join(PROVIDERS)}, e.g. cuda,cpu"
            )
    if target_name is not None:
        from edgeformer.zoo import resolve_target

        target = resolve_target(target_name)
        target_form = target.fusions
        providers = providers or target.providers
        if form is not None and form != target_form:
            raise click.UsageError(f"--form {form} contradicts target {target_name}, whose form is {target_form}")
        if target_form == "none":
            raise click.UsageError(f"target {target_name} asks for no fusion; choose --form or another target")
        form = target_form
    form = form or "contrib"
    dims = _dim_sizes(dim_specs)
    echo = functools.partial(click.echo, err=True)
    if source.is_dir():
        out = output or default_output(source, "fused")
        manifest = fuse_bundle(source, out, form, providers=providers, dims=dims, force=force, debug=debug, log=echo)
        reports = manifest["fusions"]
    else:
        out = output or source.with_suffix(".fused.onnx")
        report = fuse_file(
            source, out, form, providers=providers or ("cpu",), dims=dims, force=force, debug=debug, log=echo
        )
        reports = {source.name: report.to_dict()}
        if debug and report.debug:
            echo(report.debug)
    if as_json:
        click.echo(json_text(reports))
        return
    for name, report_dict in reports.items():
        click.echo(f"{name}:")
        print_report(report_dict, click.echo)
    click.echo(f"wrote {out}")


# ----- bench: options generated from the one declaration (edgeformer.benchmark.options) ------------------


class _Declared(click.ParamType):
    """A declared benchmark option's own parser as a click type: one range and message everywhere."""

    def __init__(self, option: BenchOption) -> None:
        self.option = option
        self.name = option.metavar or "value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str) or self.option.parse is None:
            return value
        try:
            return self.option.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _benchmark_options(f: Any) -> Any:
    """Every option of ``edgeformer.benchmark.options.OPTIONS``, in its order (``--providers`` as in
    every command that runs graphs)."""
    for o in reversed(BENCH_OPTIONS):
        if o.field == "providers":
            f = providers_option(o.help, default=value_text(o.default()))(f)
        elif o.parse is None:
            f = click.option(
                f"{o.flag}/--no-{o.flag[2:]}", o.dest, default=o.default(), show_default=True, help=o.help
            )(f)
        else:
            f = click.option(o.flag, o.dest, type=_Declared(o), metavar=o.metavar, help=help_text(o))(f)
    return f


def _legacy_json_file(
    models: tuple[str, ...], as_json: bool, json_path: Path | None
) -> tuple[tuple[str, ...], bool, Path | None]:
    """``--json FILE`` from before ``--json`` meant stdout: click reads FILE as one more model, and no
    bundle or card is a .json file, so it is taken as the report file (``-o FILE``), with a note."""
    legacy = [m for m in models if m.endswith(".json")]
    if not as_json or not legacy:
        return models, as_json, json_path
    if json_path is not None or len(legacy) > 1 or len(legacy) == len(models):
        raise click.UsageError(
            f"{legacy[0]}: --json prints the report to stdout and takes no file; write it with -o {legacy[0]}"
        )
    note = f"note: --json FILE is deprecated (--json now prints to stdout); writing {legacy[0]} as -o does"
    click.echo(note, err=True)
    return tuple(m for m in models if m != legacy[0]), False, Path(legacy[0])


@main.command(name="bench")
@click.argument("models", nargs=-1, required=True, metavar="BUNDLE|CARD [BUNDLE...]")
@click.option(
    "--variants",
    help="For a CARD: what to export and measure, comma-separated target names; 'unfused' is cpu-fp32 "
    "without fusions. [default: unfused,cpu-fp32, plus cpu-int8 where it exists]",
)
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True, help="Include torch eager.")
@click.option("--baseline", help="Variant the others are compared with. [default: torch, else the first]")
@click.option(
    "--repeats", type=count(1, 1000), default=3, show_default=True, help="Processes per variant, interleaved."
)
@_benchmark_options
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True, max=7 * 86400), help="Seconds per process.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Where a CARD's variants go.")
@click.option("--check/--no-check", default=True, show_default=True, help="Check parity when exporting.")
@seed_option()
@click.option("--label", help="Name of this machine in reports. [default: host name]")
@click.option("--json", "as_json", is_flag=True, help="Print the report (every sample) as JSON instead of the table.")
@click.option(
    "-o",
    "--output",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report (every sample) as JSON to this file.",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write one line per case.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG.")
@friendly
def bench_command(
    models: tuple[str, ...],
    variants: str | None,
    provider_alias: tuple[str, ...] | None,
    as_json: bool,
    json_path: Path | None,
    csv_path: Path | None,
    plot_path: Path | None,
    **options: Any,
) -> None:
    """Benchmark variants of a model side by side: torch eager and ONNX bundles.

    Give bundle directories (measured as they are; torch eager is rebuilt from the first one's
    manifest), or one model CARD, whose variants are exported into a cache directory (see
    --variants). Each variant runs in a process of its own, one at a time, round-robin over
    --repeats; the table gives each case per variant and its speedup against --baseline, the
    machine's measured limits, and tokens/s as a fraction of the weight-bandwidth limit.
    """
    from edgeformer.benchmark import orchestrator, output, plots  # numpy and onnxruntime: when it runs
    from edgeformer.benchmark.report import to_json

    models, as_json, json_path = _legacy_json_file(models, as_json, json_path)
    options["providers"] = merge_providers(options["providers"], provider_alias)
    if plot_path is not None:
        plots.plot_available()
    wanted = [p.strip() for p in variants.split(",") if p.strip()] if variants is not None else None
    keep = ("with_torch", "baseline", "repeats", "cache_dir", "check", "seed", "label", "timeout")
    report = orchestrator.bench(
        models,
        settings_from_values(options),
        variants=wanted,
        limits=limits_from_values(options),
        log=lambda msg: click.echo(f"[bench] {msg}", err=True),
        **{k: options[k] for k in keep},
    )
    output.write_outputs(report, json_path=json_path, csv_path=csv_path, plot_path=plot_path)
    if as_json:
        click.echo(to_json(report))
        return
    click.echo(output.table(report))
    for path in (json_path, csv_path, plot_path):
        if path is not None:
            click.echo(f"wrote {path}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write (default: <bundle>-<precision>).")
@click.option(
    "--precision",
    type=click.Choice(["int8", "int4", "fp16"]),
    default="int8",
    show_default=True,
    help="int8: weights and activations; int4: MatMul weights only (decoders); fp16: for GPU targets.",
)
@click.option(
    "--mode",
    type=click.Choice(["dynamic", "static"]),
    default="dynamic",
    show_default=True,
    help="int8 only. dynamic: activation ranges at run time; static: QDQ with ranges from calibration data.",
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="How static int8 turns calibration activations into ranges.",
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Calibration data: an .npz with input_ids (and attention_mask), or a text file for byte-level models. "
    "Default for byte-level models: the standard library's docstrings; otherwise random tokens.",
)
@click.option("--validation", type=click.Path(dir_okay=False, path_type=Path), help="Held-out data for the report.")
@click.option(
    "--budget",
    "budget_items",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Accuracy budget against fp32 (repeatable): cosine=0.999, top1=0.99, perplexity=1.02. Nodes are kept in "
    "float, most sensitive first, until it holds. Default: the precision's budget.",
)
@click.option("--samples", type=count(1, 1 << 16), default=32, show_default=True, help="Calibration rows.")
@click.option("--force", is_flag=True, help="Replace an existing output bundle.")
@reduced_precision_options
@click.option("--json", "as_json", is_flag=True, help="Print the quantization report as JSON.")
@friendly
def quantize(
    bundle: Path,
    output: Path | None,
    precision: str,
    mode: str,
    method: str,
    calibration: Path | None,
    validation: Path | None,
    budget_items: tuple[str, ...],
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
    from edgeformer.budget import parse_budget
    from edgeformer.paths import default_output
    from edgeformer.quantize.stage import quantize_bundle

    try:
        budget = parse_budget(budget_items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from None
    _verbose(verbose)
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
        log=_progress,
    )
    report = manifest["quantization"]
    if as_json:
        click.echo(json_text(report))
        return
    from edgeformer.verdict import Verdict

    for name, graph in report["graphs"].items():
        click.echo(
            f"{name}: {graph['bytes_before'] / 1e6:.1f} MB -> {graph['bytes_after'] / 1e6:.1f} MB "
            f"({graph['size_ratio']:.0%}), {len(graph['kept_in_float'])} node(s) in float; "
            f"validation {graph['validation']}"
        )
    click.echo(f"{report['calibration']}; {report['validation']}")
    click.echo(Verdict.from_dict(report["verdict"]).line())
    click.echo(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

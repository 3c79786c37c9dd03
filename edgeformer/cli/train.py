"""``edgeformer train``: the recipe's knobs as options; the run is decided by ``train_run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeformer.cli.errors import friendly
from edgeformer.cli.options import FiniteFloatRange, count, force_option, output_option, seed_option
from edgeformer.io import json_text

SCHEDULES = ("linear", "cosine", "inverse-sqrt")  # edgeformer.nn.training.SCHEDULES (a test ties them)
TRAIN_PRECISIONS = ("fp32", "bf16")  # edgeformer.nn.training.PRECISIONS: importing it would import torch


def _recipe_options(f: Any) -> Any:
    """The knobs of a training recipe; each overrides the card's [training] value of the same name."""
    unit = FiniteFloatRange(0, 1, max_open=True)
    open_unit = FiniteFloatRange(0, 1, min_open=True, max_open=True)
    options = [
        click.option("--steps", type=count(1, 10**8), help="Optimizer steps."),
        click.option("--batch-size", "batch_size", type=count(1, 4096), help="Sequences per micro-batch."),
        click.option(
            "--batch-tokens",
            "batch_tokens",
            type=count(1, 10**7),
            help="Batch by tokens: rows of similar length, rows x longest <= N (in place of --batch-size).",
        ),
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
        click.option("--precision", type=click.Choice(TRAIN_PRECISIONS), help="bf16: autocast the forward pass."),
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


@click.command(name="train")
@click.argument("card_name", metavar="CARD", required=False)
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path), help="Training data (repeatable).")
@click.option("--valid", "valid", multiple=True, type=click.Path(path_type=Path), help="Held-out data (repeatable).")
@click.option("--init", type=click.Path(path_type=Path), help="Start from these weights (file, card, or directory).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="Continue the run in this -o DIR.")
@click.option(
    "--tokenizer",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Hugging Face tokenizer.json (default: the card's, else bytes); copied into the output for export.",
)
@_recipe_options
@seed_option("Override the training recipe's seed.", default=None)
@output_option("New directory for the trained card and checkpoint (default: ./<card>-trained).", file_okay=False)
@click.option("--out-dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)
@force_option("Replace an earlier training output directory (nothing else).")
@friendly
def train_cmd(
    card_name: str | None,
    data: tuple[Path, ...],
    valid: tuple[Path, ...],
    init: Path | None,
    resume: Path | None,
    tokenizer: Path | None,
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
    `edgeformer export DIR` takes it from there. The shipped cards are never changed.
    """
    from edgeformer.train_run import run_training

    if out_dir is not None:
        click.echo("--out-dir is deprecated; use -o/--output", err=True)
    overrides = {k: v for k, v in recipe.items() if v is not None}
    result = run_training(
        card_name, output or out_dir, data=list(data), valid=list(valid), init=init, resume=resume,
        tokenizer=tokenizer, overrides=overrides, force=force, echo=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    if result:  # under torchrun only rank 0 reports
        click.echo(json_text(result))

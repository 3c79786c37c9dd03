"""The commands about model cards: ``models`` (the shipped zoo, torch-free) and ``import`` (a
Hugging Face directory as a card); ``train`` is in train.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeformer.cli.errors import friendly
from edgeformer.cli.options import force_option, json_option, memory_check_option, output_option
from edgeformer.io import json_text


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def zoo_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows of ``zoo.zoo_rows`` as an aligned text table."""
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
            human_bytes(r["size_fp32_bytes"]),
            "trained" if r["trained"] else "random",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *table]]


@click.command()
@json_option("Print the zoo as JSON instead of a table.")
@friendly
def models(as_json: bool) -> None:
    """List the shipped model cards: name, family, shape, parameters and fp32 size."""
    from edgeformer.zoo import zoo_rows

    rows = zoo_rows()
    click.echo(json_text(rows) if as_json else "\n".join(zoo_table(rows)))


@click.command(name="import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_option(
    "Card to write (default: ./<directory name>.toml); the checkpoint and tokenizer go beside it.", dir_okay=False
)
@click.option("--name", help="The card's name (default: the directory's name).")
@force_option("Replace an earlier import's card and its files (nothing else).")
@memory_check_option("Refuse, from config.json, a model larger than the available memory before reading weights.")
@json_option("Print what was written as JSON.")
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
    from edgeformer.importers import import_card

    report = import_card(directory, output, name=name, force=force, memory_check=memory_check)
    if as_json:
        click.echo(json_text(report))
        return
    for tensor, why in report["ignored"].items():
        click.echo(f"ignored {tensor}: {why}", err=True)
    extra = f", {report['tokenizer']}" if report["tokenizer"] else ""
    click.echo(
        f"wrote {report['card']} ({report['architecture']} -> {report['family']}, {report['parameters']:,} "
        f"parameters; {Path(report['checkpoint']).name}{extra})"
    )

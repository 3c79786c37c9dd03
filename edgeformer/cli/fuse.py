"""``edgeformer fuse``: attention, layer norm and GELU fused in an .onnx file or a bundle
(``edgeformer.fusions.request``: the form and providers the options ask for, then the fusion)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from edgeformer.cli.errors import friendly
from edgeformer.cli.options import force_option, json_option, merge_providers, output_option, providers_option
from edgeformer.io import json_text
from edgeformer.targets import FUSED_FORMS


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@output_option("Where to write (default: <name>.fused.onnx or <bundle>-fused).")
@click.option(
    "--form",
    type=click.Choice(FUSED_FORMS),
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
@force_option("Replace an existing output (a bundle or .onnx file edgeformer wrote; nothing else).")
@click.option("--debug", is_flag=True, help="Print the pattern matcher's reasons for every block left unfused.")
@json_option("Print the fusion report as JSON.")
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
    from edgeformer.fusions.request import dim_sizes, fuse_form, fuse_path
    from edgeformer.fusions.standalone import print_report

    form, providers = fuse_form(form, target_name, merge_providers(providers, provider_alias))
    echo = functools.partial(click.echo, err=True)
    out, reports = fuse_path(
        source, output, form, providers=providers, dims=dim_sizes(dim_specs), force=force, debug=debug, log=echo
    )
    if as_json:
        click.echo(json_text(reports))
        return
    for name, report_dict in reports.items():
        click.echo(f"{name}:")
        print_report(report_dict, click.echo)
    click.echo(f"wrote {out}")

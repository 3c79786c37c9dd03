"""``edgeformer bench``: variants of a model side by side (``edgeformer.benchmark.orchestrator``);
its options are generated from the one declaration in ``edgeformer.benchmark.options``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeformer.benchmark.options import OPTIONS as BENCH_OPTIONS
from edgeformer.benchmark.options import Option as BenchOption
from edgeformer.benchmark.options import help_text, limits_from_values, settings_from_values, value_text
from edgeformer.cli.errors import friendly
from edgeformer.cli.options import (
    FiniteFloatRange,
    check_option,
    count,
    json_option,
    merge_providers,
    output_option,
    providers_option,
    seed_option,
)


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


def legacy_json_file(
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


@click.command(name="bench")
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
@check_option("Check parity when exporting.")
@seed_option()
@click.option("--label", help="Name of this machine in reports. [default: host name]")
@json_option("Print the report (every sample) as JSON instead of the table.")
@output_option("Write the report (every sample) as JSON to this file.", dest="json_path", dir_okay=False)
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

    models, as_json, json_path = legacy_json_file(models, as_json, json_path)
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

"""The ``edgeformer`` command. Each command is a thin call into the library; every EdgeformerError
becomes a one-paragraph message and exit code 1 (click's usage errors, and edgeformer.errors.UsageError, exit
with 2). One module per command, or per group of small ones; they import the library only when a
command runs, so that ``edgeformer --help`` and ``edgeformer models`` start without torch."""

from __future__ import annotations

import warnings
from typing import Any

import click

from edgeformer import __version__
from edgeformer.cli.bench import bench_command
from edgeformer.cli.check import check
from edgeformer.cli.export import export_cmd
from edgeformer.cli.fuse import fuse
from edgeformer.cli.quantize import quantize
from edgeformer.cli.train import train_cmd
from edgeformer.cli.zoo import import_cmd, models


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


for _command in (models, train_cmd, import_cmd, export_cmd, check, fuse, bench_command, quantize):
    main.add_command(_command)

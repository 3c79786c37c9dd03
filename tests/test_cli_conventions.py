"""One spelling per concept across every command: -o/--output, --providers, --json (stdout), --seed."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeformer.cli import main
from edgeformer.cli.bench import legacy_json_file
from edgeformer.cli.options import SeedRange

WRITERS = {"train", "import", "export", "fuse", "quantize", "bench"}


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


def visible_names(command: click.Command) -> set[str]:
    return {name for p in options(command) if not p.hidden for name in p.opts}


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_spells_each_concept_one_way(name):
    command = main.commands[name]
    names = visible_names(command)
    assert not names & {"--out-dir", "--out", "--output-dir", "--json-file", "--provider"}, name
    for opt in options(command):
        if "--output" in opt.opts:
            assert "-o" in opt.opts, f"{name} --output has no -o"
        if "--json" in opt.opts:
            assert opt.is_flag and opt.help.startswith("Print"), f"{name} --json must be a flag printing to stdout"
        if "--seed" in opt.opts:
            assert isinstance(opt.type, SeedRange), f"{name} --seed has its own type"
        if "--providers" in opt.opts:
            assert opt.metavar == "NAMES" and "comma-separated" in opt.help, name
    if name in WRITERS:
        assert {"-o", "--output"} <= names, f"{name} writes files but has no -o/--output"
    text = CliRunner().invoke(main, [name, "--help"]).output
    assert "9223372036854775808" not in text and "18446744073709551615" not in text, name


def test_seed_means_the_same_in_export_and_bench():
    def seed(command: str) -> click.Option:
        return next(o for o in options(main.commands[command]) if "--seed" in o.opts)

    assert seed("export").help == seed("bench").help and "random weights" in seed("export").help
    assert seed("export").default == seed("bench").default == 0
    result = CliRunner().invoke(main, ["export", "bert-mini", "--seed", str(2**64)])
    assert result.exit_code == 2 and "-2**63 to 2**64-1" in result.output


def test_check_takes_providers_and_the_old_provider_spelling_with_a_note(edge_bundle):
    bundle = str(edge_bundle("bert-mini"))
    result = CliRunner().invoke(main, ["check", bundle, "--providers", "cdua,cpu"])
    assert result.exit_code == 1 and "unknown execution provider 'cdua'" in result.output
    result = CliRunner().invoke(main, ["check", bundle, "--provider", "cdua"])
    assert result.exit_code == 1 and "unknown execution provider 'cdua'" in result.output
    assert "--provider is deprecated; use --providers" in result.output
    result = CliRunner().invoke(main, ["check", bundle, "--providers", " , "])
    assert result.exit_code == 2 and "name at least one" in result.output


def test_fuse_and_bench_take_the_old_provider_spelling_too(tmp_path):
    result = CliRunner().invoke(main, ["fuse", str(tmp_path), "--provider", "gpu"])
    assert result.exit_code == 2 and "unknown gpu" in result.output and "deprecated" in result.output


def test_bench_json_prints_and_an_old_json_file_argument_still_writes_the_file():
    assert legacy_json_file(("gpt-mini",), True, None) == (("gpt-mini",), True, None)
    assert legacy_json_file(("gpt-mini", "r.json"), True, None) == (("gpt-mini",), False, Path("r.json"))
    result = CliRunner().invoke(main, ["bench", "r.json", "--json"])
    assert result.exit_code == 2 and "write it with -o r.json" in result.output
    result = CliRunner().invoke(main, ["bench", "gpt-mini", "--json", "r.json", "-o", "s.json"])
    assert result.exit_code == 2 and "takes no file" in result.output


def test_runtime_bench_names_its_input_seed_apart_from_the_weights_seed():
    """`python -m edgeformer.runtime.bench --seed` seeded the inputs while every other --seed seeds weights:
    it is --input-seed now (0 to 2**64-1); --seed still works for old scripts, unlisted."""
    from edgeformer.benchmark import device, settings
    from edgeformer.benchmark.options import settings_from_values

    parser = device._parser("bundle")
    assert "--seed" not in parser.format_help() and "--input-seed" in parser.format_help()

    def seed(*argv: str) -> int:
        return settings_from_values(settings.values_of(parser.parse_args(["b", *argv]))).seed

    assert seed() == 0 and seed("--input-seed", str(2**64 - 1)) == 2**64 - 1 and seed("--seed", "5") == 5
    assert settings.to_json(settings_from_values({"input_seed": 7}))["settings"]["seed"] == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["b", "--input-seed", str(2**64)])


def test_bench_json_prints_the_report_to_stdout(edge_bundle, tmp_path):
    import json

    argv = ["bench", str(edge_bundle("bert-mini")), "--no-torch", "--repeats", "1", "--iterations", "1"]
    argv += ["--warmup", "0", "--sequence", "4", "--threads", "1", "--no-limits", "--no-generate"]
    result = CliRunner().invoke(main, [*argv, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [run["variant"] for run in report["runs"]] == ["bert-mini"]
    result = CliRunner().invoke(main, [*argv, "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 0 and f"wrote {tmp_path / 'r.json'}" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["runs"][0]["variant"] == "bert-mini"

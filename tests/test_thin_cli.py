"""The CLI is thin (issue #20): what a command decided now lives in library functions, tested here
without click; the CLI package keeps every module under 400 lines and every function under 60; and
each vocabulary the CLI offers (forms, precisions, modes, methods) is defined once, in targets."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformer import targets as config
from edgeformer.check_outcome import check_outcome
from edgeformer.cli import main
from edgeformer.errors import CardError, ParityError, UsageError
from edgeformer.export.resolve import source_kind
from edgeformer.fusions.request import dim_sizes, fuse_form
from edgeformer.parity import ParityReport
from edgeformer.quantize.stage import BudgetMissError
from edgeformer.verify_bundle import SourcelessReport

CLI = Path(__file__).resolve().parent.parent / "edgeformer" / "cli"


def test_fuse_form_reconciles_form_target_and_providers():
    assert fuse_form(None, None, None) == ("contrib", None)
    assert fuse_form("nnapi", None, ("cpu",)) == ("nnapi", ("cpu",))
    assert fuse_form(None, "portable-fp32", None) == ("standard", ("cpu",))
    assert fuse_form("standard", "portable-fp32", ("cuda", "cpu")) == ("standard", ("cuda", "cpu"))
    with pytest.raises(UsageError, match="^--form contrib contradicts target portable-fp32, whose form is standard$"):
        fuse_form("contrib", "portable-fp32", None)
    with pytest.raises(UsageError, match="^target unfused-fp32 asks for no fusion; choose --form or another target$"):
        fuse_form(None, "unfused-fp32", None)
    with pytest.raises(UsageError, match=r"^--providers 'cuda,cdua': unknown cdua; give names from cpu, cuda"):
        fuse_form(None, None, ("cuda", "cdua"))
    with pytest.raises(CardError, match="unknown target 'gpu-magic'"):
        fuse_form(None, "gpu-magic", None)


def test_dim_sizes_parse_and_name_the_option():
    assert dim_sizes(["sequence=128", " past = 3"]) == {"sequence": 128, "past": 3}
    for bad in ("sequence", "=4", "sequence=0", "sequence=-1", "sequence=1048577"):
        with pytest.raises(UsageError, match="give NAME=SIZE with a positive integer up to 1,048,576") as info:
            dim_sizes([bad])
        assert info.value.param_hint == "--dim"


def test_a_usage_error_from_the_library_is_a_usage_error_on_the_command_line(tmp_path):
    result = CliRunner().invoke(main, ["fuse", str(tmp_path), "--target", "portable-fp32", "--form", "qnn"])
    assert result.exit_code == 2
    assert "Error: --form qnn contradicts target portable-fp32, whose form is standard" in result.output
    result = CliRunner().invoke(main, ["fuse", str(tmp_path), "--dim", "sequence=0"])
    assert result.exit_code == 2 and "Error: Invalid value for --dim: 'sequence=0': give NAME=SIZE" in result.output


def test_source_kind_tells_a_factory_a_directory_and_a_card(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert source_kind("my_pkg.models:build") == "factory"
    assert source_kind("bert-mini") == "card"
    assert source_kind("cards/mine.toml") == "card"
    (tmp_path / "hf").mkdir()
    assert source_kind("hf") == "directory"
    (tmp_path / "odd:name").mkdir()  # an existing path with a colon is a path, not module:function
    assert source_kind("odd:name") == "directory"


def _verdict(ok: bool, cosine: float) -> dict:
    misses = [] if ok else [f"cosine {cosine} < 0.999"]
    return {"ok": ok, "precision": "int8", "measured": {"cosine": cosine}, "bounds": {"cosine": 0.999},
            "misses": misses, "rows": "validation rows", "rows_file": "verdict_rows.npz"}  # fmt: skip


def test_check_outcome_without_the_torch_source():
    ok = SourcelessReport("user code", {"files": "ok", "graphs run": "ok"})
    assert check_outcome(ok).error is None
    assert check_outcome(ok).lines == [
        ("bundle ok (files, IO spec, graphs run, finite outputs, recorded parity); torch parity NOT checked", False)
    ]
    required = check_outcome(ok, require_torch_parity=True).error
    assert isinstance(required, ParityError)
    assert str(required) == "torch parity NOT checked (user code) and --require-torch-parity was given"
    failed = check_outcome(SourcelessReport("user code", {"files": "ok", "graphs run": "NaN in logits"})).error
    assert str(failed) == "the bundle failed what could be checked without its torch source: graphs run: NaN in logits"


def test_check_outcome_of_a_recorded_verdict():
    report = ParityReport("int8", 0.1, budget={"cosine": 0.999}, provider="CPUExecutionProvider")
    report.recorded_verdict = _verdict(True, 0.9995)
    outcome = check_outcome(report)
    assert outcome.error is None
    assert outcome.lines[0] == (
        "parity ok on CPUExecutionProvider: within the int8 budget {'cosine': 0.999} against the torch source",
        False,
    )
    assert outcome.lines[1][0].startswith("recorded verdict (as recorded): budget met")
    report.rejudged_verdict = _verdict(False, 0.99)  # re-measured by check: it decides, and nobody accepted it
    outcome = check_outcome(report)
    assert outcome.lines[1][0].startswith("verdict re-measured on the bundle's verdict_rows.npz: budget NOT met")
    assert outcome.lines[2][0] == "  re-measured / recorded when written (met): cosine 0.99 / 0.9995"
    assert isinstance(outcome.error, BudgetMissError)
    assert str(outcome.error).startswith("the verdict re-measured by check misses and the miss was not accepted")


def test_check_outcome_of_a_miss_accepted_when_written():
    report = ParityReport("int8", 0.1, budget={"cosine": 0.999}, provider="CPUExecutionProvider")
    report.recorded_verdict = _verdict(False, 0.99)
    report.accepted_budget_miss = {"misses": ["cosine 0.99 < 0.999", 7]}
    line = "budget NOT met (accepted at export: cosine 0.99 < 0.999)"
    refused = check_outcome(report)
    assert str(refused.error) == f"{line}; pass --accept-budget-miss to check to accept it here too"
    accepted = check_outcome(report, accept_budget_miss=True)
    assert accepted.error is None
    assert accepted.lines[-1] == (f"{line}; exit 0 because --accept-budget-miss was given", False)


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_the_cli_package_is_small():
    modules = sorted(CLI.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "__main__", "options", "errors", "export", "check", "fuse"}
    for module in modules:
        text = module.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 400, f"{module.name} is over 400 lines"
        for fn in _functions(ast.parse(text)):
            assert fn.end_lineno is not None and fn.end_lineno - fn.lineno + 1 <= 60, f"{module.name}: {fn.name}"


def test_the_cli_lists_no_vocabulary_of_its_own():
    for module in sorted(CLI.glob("*.py")):
        text = module.read_text(encoding="utf-8")
        assert not re.search(r"Choice\(\s*[\[(]", text), f"{module.name}: a literal list of choices"
    choices = {p.name: p.type.choices for p in main.commands["quantize"].params if hasattr(p.type, "choices")}
    assert choices == {
        "precision": config.REDUCED_PRECISIONS,
        "mode": config.QUANTIZATION_MODES,
        "method": config.CALIBRATION_METHODS,
    }
    assert {"fp32", *config.REDUCED_PRECISIONS} == set(config.PRECISIONS)
    form = next(p for p in main.commands["fuse"].params if p.name == "form")
    assert tuple(form.type.choices) == config.FUSED_FORMS == ("contrib", "standard", "nnapi", "coreml", "qnn")


def test_one_definition_of_each_vocabulary_in_the_library():
    from edgeformer import numbers
    from edgeformer.benchmark import options
    from edgeformer.cli import options as cli_options
    from edgeformer.quantize import int8, passes

    assert int8.METHODS is config.CALIBRATION_METHODS and passes.MODES is config.QUANTIZATION_MODES
    assert options.COUNT_LIMIT is numbers.COUNT_LIMIT and cli_options.COUNT_LIMIT is numbers.COUNT_LIMIT


def test_the_zoo_rows_and_training_refusal_are_library_functions():
    from edgeformer.io import json_text
    from edgeformer.train_run import run_training
    from edgeformer.zoo import zoo_rows

    rows = zoo_rows()
    bert = next(r for r in rows if r["name"] == "bert-mini")
    assert bert["family"] == "encoder" and bert["size_fp32_bytes"] == 4 * bert["parameters"] and not bert["trained"]
    assert CliRunner().invoke(main, ["models", "--json"]).output == json_text(rows) + "\n"
    with pytest.raises(CardError, match="^card 'bert-mini' has no demo recipe to re-run; give --data FILE"):
        run_training(
            "bert-mini", None, data=[], valid=[], init=None, resume=None, overrides={}, force=False, echo=print
        )


def test_python_dash_m_runs_the_package():
    import subprocess
    import sys

    from edgeformer import __version__

    done = subprocess.run([sys.executable, "-m", "edgeformer.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == f"edgeformer, version {__version__}\n"


def test_the_train_command_offers_the_trainers_vocabularies():
    # the CLI spells them out so that `edgeformer --help` does not import torch; they must not drift
    from edgeformer.cli import train
    from edgeformer.nn import training

    assert train.SCHEDULES == training.SCHEDULES and train.TRAIN_PRECISIONS == training.PRECISIONS


# Options of the same name that mean different things in each command (and so are spelled in each).
SAME_NAME_OTHER_MEANING = {
    "--steps": "check: greedy tokens to compare; train: optimizer steps",
    "--target": "export: the target to export to; fuse: where the fused form and providers come from",
    "--precision": "quantize: a reduced precision of the bundle; train: autocast of the forward pass",
}


def test_an_option_several_commands_share_is_defined_once_in_options():
    """--json, --force, -o/--output, --check, --memory-check, --max-sequence, --calibration: one factory
    each in cli/options.py; a command module spells only the options that are its own."""
    spelled: dict[str, set[str]] = {}
    for module in sorted(CLI.glob("*.py")):
        if module.name == "options.py":
            continue
        for call in re.finditer(r"click\.option\(\s*((?:\"[^\"]*\",\s*)+)", module.read_text(encoding="utf-8")):
            for name in re.findall(r"\"(--[^\"/]*)", call.group(1)):
                spelled.setdefault(name, set()).add(module.name)
    shared = {name: sorted(where) for name, where in spelled.items() if len(where) > 1}
    assert set(shared) == set(SAME_NAME_OTHER_MEANING), shared

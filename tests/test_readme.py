"""The README is executable: its two commands are what CI and users run, every command of its tour
runs here in order, and every Python block runs against the bundles the tour wrote."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformer.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

# What the test adds to a tour command that would take minutes on 2 cores; everything else runs as
# written. Keyed by the command's first words.
SHRINK = {
    "edgeformer bench": ["--repeats", "1", "--iterations", "2", "--warmup", "0", "--sequence", "8", "--prompt", "4",
                         "--new-tokens", "4", "--gen-runs", "1", "--gen-warmup", "0", "--no-limits", "--threads", "1"],
    "edgeformer train": ["--steps", "2"],
}  # fmt: skip
MAX_LINES = 250


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"```{lang}\n(.+?)\n```", text, flags=re.S)


def _commands() -> list[str]:
    return _blocks(_section("Two commands"))


def tour() -> list[list[str]]:
    """The tour's commands as argument lists (comments dropped)."""
    (block,) = _blocks(_section("Tour"))
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = _commands()
    assert len(commands) == 2
    setup, tests = commands
    assert "pip install torch==2.13.0" in setup and "edgeformer export" in setup
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must appear verbatim in .ci/run"


def test_readme_is_a_guide_not_a_notebook():
    assert README.count("\n") <= MAX_LINES
    for link in re.findall(r"\]\(((?:docs|runtimes)/[^)#]+)\)", README):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


def _hf_directory(path: Path) -> None:
    """A tiny Hugging Face GPT-2 directory (random weights): what `edgeformer import` takes."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(path)


def _run(args: list[str]) -> str:
    """One CLI command in-process (``python -m`` ones in a process of their own): exit code 0, no traceback."""
    if args[:2] == ["python", "-m"]:
        done = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"$ {shlex.join(args)}\n{done.stderr[-3000:]}"
        return done.stdout
    assert args[0] == "edgeformer", args
    key = " ".join(args[:2])
    argv = args[1:] + SHRINK.get(key, [])
    result = CliRunner().invoke(main, argv, catch_exceptions=True)
    shown = f"$ {shlex.join(args)}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), shown + repr(result.exception)
    assert result.exit_code == 0, shown
    assert "Traceback" not in result.output, shown
    return result.output


@pytest.fixture(scope="module")
def toured(tmp_path_factory):
    """A working directory in which the two commands' export and then the tour ran, in order."""
    work = tmp_path_factory.mktemp("readme")
    _hf_directory(work / "my-hf-model")
    # the tour's "your text files": any text will do
    (work / "notes.txt").write_text("Return the sum of two numbers.\nSplit the string at the separator.\n" * 40)
    setup = _commands()[0].split("&& ")[-1]  # the first command's edgeformer call
    outputs = {}
    here = Path.cwd()
    try:
        os.chdir(work)
        outputs[setup] = _run(shlex.split(setup))
        for args in tour():
            outputs[shlex.join(args)] = _run(args)
    finally:
        os.chdir(here)
    return work, outputs


def test_every_tour_command_runs(toured):
    work, outputs = toured
    assert len(outputs) == len(tour()) + 1
    for bundle in ("demo-decoder-cpu-fp32", "gpt", "bert-portable", "gpt-unfused", "gpt-int8", "enc-int8", "mine"):
        assert (work / bundle / "manifest.json").is_file() and (work / bundle / "manifest.sha256").is_file(), bundle
    assert (work / "fused.onnx").is_file() and (work / "mine.toml").is_file()
    assert (work / "bench.json").is_file() and (work / "device.json").is_file()
    assert (work / "trained" / "demo-decoder.toml").is_file() and (work / "trained-bundle" / "model.onnx").is_file()
    assert (work / "gpt-trained-bundle" / "model.onnx").is_file()
    assert '"layers"' in outputs["edgeformer models --json"]


def test_every_python_block_runs(toured):
    work, _ = toured
    blocks = _blocks(README, "python")
    assert len(blocks) >= 2
    for code in blocks:
        done = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{code}\n{done.stderr[-3000:]}"
        assert done.stdout.strip(), code  # each block prints what it shows


def test_every_bench_script_the_readme_names_exists_and_explains_itself():
    scripts = sorted(set(re.findall(r"python (bench/\w+\.py)", README)))
    assert scripts
    for script in scripts:
        done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "usage" in done.stdout.lower(), (script, done.stderr[-2000:])

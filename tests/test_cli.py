from __future__ import annotations

import json
import tomllib

from click.testing import CliRunner

from edgeformer import __version__
from edgeformer.cli import main
from edgeformer.zoo import card_names


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help():
    assert __version__ in run("--version").output
    out = run("--help").output
    assert "models" in out and "train" in out


def test_models_table_and_json():
    table = run("models")
    assert table.exit_code == 0
    for name in card_names():
        assert name in table.output
    assert "124.4 M" in table.output  # gpt2-small's parameter count
    rows = json.loads(run("models", "--json").output)
    by_name = {r["name"]: r for r in rows}
    assert by_name["bert-base"]["parameters"] == 108_890_112
    assert by_name["demo-decoder"]["trained"] is True
    assert by_name["bert-mini"]["size_fp32_bytes"] == 4 * by_name["bert-mini"]["parameters"]


def test_train_refuses_unknown_and_untrainable_cards():
    result = run("train", "no-such-card")
    assert result.exit_code == 1 and "unknown model card 'no-such-card'" in result.output
    assert "Traceback" not in result.output
    result = run("train", "bert-mini")
    assert result.exit_code == 1 and "has no demo recipe to re-run; give --data FILE" in result.output


def test_train_writes_checkpoint_and_card(tmp_path):
    result = run("train", "demo-encoder", "--steps", "2", "--out-dir", str(tmp_path / "out"))  # the old spelling
    tmp_path = tmp_path / "out"
    assert result.exit_code == 0, result.output
    card = tomllib.loads((tmp_path / "demo-encoder.toml").read_text())
    assert card["training"]["steps"] == 2
    assert 0.0 <= card["metrics"]["accuracy"] <= 1.0
    assert (tmp_path / "demo-encoder.safetensors").stat().st_size > 100_000
    from edgeformer.nn.checkpoint import sha256_file

    assert card["checkpoint_sha256"] == sha256_file(tmp_path / "demo-encoder.safetensors")


def test_bad_card_path_is_a_message(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text('name = "x"\n[model]\nfamily = "encoder"\n')
    result = run("train", str(bad))
    assert result.exit_code == 1 and "vocab_size is missing" in result.output


def test_export_and_check_commands(tmp_path):
    out = tmp_path / "gpt"
    result = run("export", "gpt-mini", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output and (out / "manifest.json").is_file()
    again = run("export", "gpt-mini", "-o", str(out))
    assert again.exit_code == 1 and "pass --force" in again.output
    result = run("check", str(out), "--json", "--steps", "8")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["ok"] and report["generation"]["steps"] == 8


def test_export_bad_names_list_known_ones(tmp_path):
    result = run("export", "gpt-mini", "--target", "gpu-magic", "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "unknown target 'gpu-magic'; known targets:" in result.output
    assert "cpu-fp32" in result.output.split("known targets:", 1)[1]
    result = run("export", "no-such", "-o", str(tmp_path / "x"))
    assert result.exit_code == 1 and "known cards:" in result.output
    result = run("check", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "not a bundle directory" in result.output
    assert not (tmp_path / "x").exists()


def test_max_sequence_caps_the_checked_shapes(tmp_path):
    out = tmp_path / "s"
    result = run("export", "sparse-mini", "-o", str(out), "--max-sequence", "20", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output[result.output.index("{") :])
    totals = {c["dims"]["total_sequence"] for c in manifest["parity"]["cases"]}
    assert max(totals) == 20 and 1 in totals
    result = run("check", str(out), "--max-sequence", "9", "--steps", "4", "--json")
    report = json.loads(result.output[result.output.index("{") :])
    assert max(c["dims"]["total_sequence"] for c in report["cases"]) == 9

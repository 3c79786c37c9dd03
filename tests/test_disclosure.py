"""Issue 18, "Disclosure": only regular files inside the card's or the model's own directory travel
into a bundle or beside a card; a file outside it, or a symbolic link, is refused with a message,
and what travels is listed in the export's output."""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from edgeformer.cli import main

SECRET = '{"token": "hunter2-do-not-ship"}'
CARD = """name = "leaky"
tokenizer = {tokenizer}

[model]
family = "decoder"
vocab_size = 64
d_model = 32
n_heads = 4
n_layers = 1
max_positions = 16
head = "lm"
"""


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "home" / "credentials.json"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _card(tmp_path, tokenizer: str):
    card_dir = tmp_path / "cards"
    card_dir.mkdir(exist_ok=True)
    card = card_dir / "leaky.toml"
    card.write_text(CARD.format(tokenizer=json.dumps(tokenizer)))
    return card


def _no_secret_anywhere(root, out):
    assert not out.exists()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "home" not in path.parts:
            assert "hunter2" not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "directory", "fifo"])
def test_a_card_tokenizer_outside_its_directory_does_not_travel(tmp_path, secret, kind):
    card_dir = tmp_path / "cards"
    card_dir.mkdir()
    name = {"absolute": str(secret), "dotdot": "../home/credentials.json"}.get(kind, "tokenizer.json")
    if kind == "symlink":
        (card_dir / "tokenizer.json").symlink_to(secret)
    elif kind == "directory":
        (card_dir / "tokenizer.json").mkdir()
    elif kind == "fifo":
        os.mkfifo(card_dir / "tokenizer.json")
    card = _card(tmp_path, name)
    out = tmp_path / "bundle"
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["export", str(card), "-o", str(out), "--no-check"])
    assert result.exit_code == 1, result.output
    words = {
        "absolute": "is not a file inside",
        "dotdot": "is not a file inside",
        "symlink": "is a symbolic link; only real files travel",
        "directory": "is not a regular file",
        "fifo": "is not a regular file",
    }[kind]
    assert "the tokenizer of card 'leaky'" in result.output and words in result.output
    assert "Traceback" not in result.output and time.perf_counter() - start < 10
    _no_secret_anywhere(tmp_path, out)


def test_a_tokenizer_beside_the_card_travels_and_is_listed(tmp_path):
    card = _card(tmp_path, "words.json")
    (card.parent / "words.json").write_text('{"model": {}}')
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["export", str(card), "-o", str(out), "--no-check"])
    assert result.exit_code == 0, result.output
    source = (card.parent / "words.json").resolve()
    assert f"copied into the bundle: tokenizer.json (from {source}, 13 bytes)" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"] == "tokenizer.json" and "tokenizer.json" in manifest["files"]
    assert (out / "tokenizer.json").read_text() == '{"model": {}}' and not (out / "tokenizer.json").is_symlink()


GPT2 = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "vocab_size": 64,
    "n_embd": 32,
    "n_head": 4,
    "n_layer": 1,
    "n_positions": 16,
}


def _hf_dir(tmp_path, config=GPT2):
    directory = tmp_path / "hf-model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("command", ["import", "export"])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_linked_hugging_face_tokenizer_is_refused(tmp_path, monkeypatch, secret, command, kind):
    directory = _hf_dir(tmp_path)
    if kind == "symlink":
        (directory / "tokenizer.json").symlink_to(secret)
    else:
        os.mkfifo(directory / "tokenizer.json")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / ("mine.toml" if command == "import" else "bundle")
    result = CliRunner().invoke(main, [command, str(directory), "-o", str(out)])
    assert result.exit_code == 1, result.output
    words = "is a symbolic link; only real files travel" if kind == "symlink" else "is not a regular file"
    assert "tokenizer 'tokenizer.json'" in result.output and words in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "mine.safetensors").exists()
    assert not (tmp_path / "mine.tokenizer.json").exists()
    _no_secret_anywhere(tmp_path, out)


# ----- Hugging Face directories: a memory pre-check from config.json --------------------------------

BIG_GPT2 = {**GPT2, "vocab_size": 50257, "n_embd": 4096, "n_head": 32, "n_layer": 48, "n_positions": 2048}


@pytest.mark.parametrize("command", ["import", "export"])
def test_a_huge_hugging_face_config_is_refused_before_reading_weights(tmp_path, monkeypatch, command):
    import edgeformer.limits

    directory = _hf_dir(tmp_path, BIG_GPT2)  # about 9.8 B parameters: 39 GB of fp32 weights, and no weights file
    monkeypatch.setattr(edgeformer.limits, "available_memory", lambda: 16 * 10**9)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / ("big.toml" if command == "import" else "bundle")
    start = time.perf_counter()
    result = CliRunner().invoke(main, [command, str(directory), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"the model {directory / 'config.json'} describes needs about" in result.output
    assert "9.88 B parameters x 4 bytes = 39.5 GB" in result.output and "16.0 GB available" in result.output
    assert "refused before building the model" in result.output and "Traceback" not in result.output
    assert not out.exists() and time.perf_counter() - start < 20


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"n_layer": 10**9}, "n_layers: must be an integer from 1 to 1,024"),
        ({"layer_norm_epsilon": float("inf")}, "layer_norm_eps: must be a finite number"),
    ],
)
def test_hugging_face_config_values_are_bounded(tmp_path, changes, words):
    from edgeformer.errors import ModelImportError
    from edgeformer.importers import import_directory

    directory = _hf_dir(tmp_path, {**GPT2, **changes})
    with pytest.raises(ModelImportError, match=words) as caught:
        import_directory(directory)
    assert "config.json" in str(caught.value)

"""Property-based: the files edgeformer reads from a stranger, as a stranger would make them.

Every reader of a card, a target, an input declaration, a Hugging Face config.json (and its weight
index and sentence-transformers files) and a calibration file gets, in place of the file:

- JSON or TOML nested to any depth (1 to 20,000 levels, arrays, tables and inline tables mixed);
- a special file: a FIFO, a link to /dev/zero, a directory, a dangling link, an empty file,
  random bytes;
- a path name: very long, unicode, with NUL, ``..``, absolute, with a trailing slash, empty;
- a card with non-finite numbers or huge counts in any [model] key.

Each must return or raise the reader's typed error (tests/props.py ``outcome``): never hang, never
a RecursionError, MemoryError, OSError or ValueError. Files are written once per case into one
scratch folder (no export per case): a few milliseconds each.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import fuzz, outcome

from edgeformer import runtime
from edgeformer.config import load_card, render_card
from edgeformer.errors import CardError, EdgeformerError, ExportError, ModelImportError
from edgeformer.export.user import load_io
from edgeformer.importers import import_directory
from edgeformer.importers.common import HFConfig
from edgeformer.quantize.calibration import CalibrationError, load_rows
from edgeformer.runtime.errors import RuntimeBundleError
from edgeformer.targets import load_target
from edgeformer.zoo import resolve_card, resolve_target

_SCRATCH: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def scratch():
    _SCRATCH.append(Path(tempfile.mkdtemp(prefix="edgeformer-files-")))
    yield
    shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def _fresh(name: str) -> Path:
    """An empty path in the scratch folder, whatever was there before (file, FIFO, link, folder)."""
    path = _SCRATCH[0] / name
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    return path


def _hf_dir() -> Path:
    directory = _SCRATCH[0] / "hf"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


CALIBRATION_CONFIG = {"vocab_size": 256, "max_positions": 32, "pad_token_id": 0}

# reader name -> (file name, call on a path, error class)
TOML_READERS = {
    "card": ("card.toml", load_card, CardError),
    "target": ("target.toml", load_target, CardError),
    "io": ("io.toml", load_io, ExportError),
}
JSON_READERS = {
    "config.json": ("config.json", lambda p: HFConfig.read(p), ModelImportError),
    "import config.json": ("config.json", lambda p: import_directory(p.parent), ModelImportError),
    "modules.json": ("modules.json", lambda p: import_directory(p.parent), ModelImportError),
    "weight index": ("model.safetensors.index.json", lambda p: import_directory(p.parent), ModelImportError),
}
OTHER_READERS = {
    "calibration text": ("calib.txt", lambda p: load_rows(CALIBRATION_CONFIG, "bytes", path=p), CalibrationError),
    "calibration npz": ("calib.npz", lambda p: load_rows(CALIBRATION_CONFIG, "bytes", path=p), CalibrationError),
}
GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 16, "n_embd": 8, "n_head": 2}


def _place(reader: str, data: bytes | None) -> Path:
    """Where ``reader``'s file goes (inside a model directory for the JSON readers), written with ``data``."""
    name = {**TOML_READERS, **JSON_READERS, **OTHER_READERS}[reader][0]
    if reader in JSON_READERS:
        path = _hf_dir() / name
        if name != "config.json":
            (path.parent / "config.json").write_text(json.dumps(GPT2 | {"n_layer": 1, "n_positions": 8}))
    else:
        path = _fresh(name)
    if data is not None:
        path.write_bytes(data)
    return path


def _call(reader: str, path: Path) -> object:
    _, call, error = {**TOML_READERS, **JSON_READERS, **OTHER_READERS}[reader]
    return outcome(f"files: {reader}", lambda: call(path), error)


# ----- nesting depth ---------------------------------------------------------------------------------


@st.composite
def nested_json(draw: st.DrawFn) -> str:
    depth = draw(st.one_of(st.integers(1, 80), st.integers(60, 70), st.integers(80, 20_000)))
    opens = draw(st.lists(st.sampled_from(["[", '{"k":']), min_size=1, max_size=4))
    pattern = [opens[i % len(opens)] for i in range(depth)]
    closes = ["]" if o == "[" else "}" for o in reversed(pattern)]
    broken = draw(st.sampled_from([0, 0, 0, 1, 2]))  # sometimes a bracket short
    return "".join(pattern) + draw(st.sampled_from(["1", "null", '"x"', "[]"])) + "".join(closes[broken:])


@st.composite
def nested_toml(draw: st.DrawFn) -> str:
    depth = draw(st.one_of(st.integers(1, 80), st.integers(60, 70), st.integers(80, 20_000)))
    kind = draw(st.sampled_from(["array", "inline", "mixed", "tables"]))
    if kind == "tables":  # [a.a.a...] headers: dotted keys nest tables too
        return "[" + ".".join(["a"] * min(depth, 3000)) + "]\nx = 1\n"
    opens = {"array": ["["], "inline": ["{a = "], "mixed": ["[", "{a = "]}[kind]
    pattern = [opens[i % len(opens)] for i in range(depth)]
    closes = ["]" if o == "[" else "}" for o in reversed(pattern)]
    prefix = draw(st.sampled_from(["", 'name = "x"\n', "[model]\n"]))
    return f"{prefix}v = {''.join(pattern)}1{''.join(closes)}\n"


@fuzz(600)
@given(st.sampled_from(sorted(TOML_READERS)), nested_toml())
def test_nested_toml(reader, text):
    result = _call(reader, _place(reader, text.encode()))
    assert not isinstance(result, RecursionError)


@fuzz(600)
@given(st.sampled_from(sorted(JSON_READERS)), nested_json())
def test_nested_json(reader, text):
    _call(reader, _place(reader, text.encode()))


# ----- special files ---------------------------------------------------------------------------------

SPECIAL_KINDS = ["fifo", "dev-zero link", "directory", "dangling link", "empty", "random", "link loop"]


def _special(path: Path, kind: str, data: bytes) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero link":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(path.parent / "nothing-here")
    elif kind == "link loop":
        path.symlink_to(path)
    else:
        path.write_bytes(b"" if kind == "empty" else data)


ALL_READERS = sorted({**TOML_READERS, **JSON_READERS, **OTHER_READERS})


@fuzz(700)
@given(st.sampled_from(ALL_READERS), st.sampled_from(SPECIAL_KINDS), st.binary(max_size=64))
def test_special_files(reader, kind, data):
    path = _place(reader, None)
    _special(path, kind, data)
    result = _call(reader, path)
    if kind in ("fifo", "dev-zero link", "directory", "dangling link", "link loop"):
        assert isinstance(result, EdgeformerError), (reader, kind, result)


# ----- path names ------------------------------------------------------------------------------------

PIECES = st.one_of(
    st.sampled_from(["..", ".", "", "card.toml", "models", "/", "//", "~", "-", " ", "\\", "C:"]),
    st.builds(lambda n, c: c * n, st.sampled_from([1, 100, 254, 255, 256, 300, 5000]), st.sampled_from("xé✓")),
    st.text(min_size=1, max_size=12),  # unicode, control characters, NUL, surrogates excluded by hypothesis
)


@st.composite
def path_names(draw: st.DrawFn) -> str:
    parts = draw(st.lists(PIECES, min_size=1, max_size=4))
    text = "/".join(parts)
    if draw(st.booleans()):
        text = "/" + text if draw(st.booleans()) else text + "/"
    return text + draw(st.sampled_from(["", "", ".toml", ".json", ".npz", ".txt", "\0"]))


PATH_CALLS = {
    "load_card": (load_card, CardError),
    "load_target": (load_target, CardError),
    "load_io": (load_io, ExportError),
    "resolve_card": (resolve_card, CardError),
    "resolve_target": (resolve_target, CardError),
    "runtime.load": (runtime.load, RuntimeBundleError),
    "calibration": (lambda p: load_rows(CALIBRATION_CONFIG, "bytes", path=p), CalibrationError),
    "import_directory": (import_directory, ModelImportError),
}


@fuzz(1200)
@given(st.sampled_from(sorted(PATH_CALLS)), path_names())
def test_path_names(call, name):
    """Run from inside the scratch folder, so relative names land there (or nowhere)."""
    function, error = PATH_CALLS[call]
    cwd = os.getcwd()
    os.chdir(_SCRATCH[0])
    try:
        outcome(f"path name: {call}", lambda: function(name), error)
    finally:
        os.chdir(cwd)


# ----- non-finite numbers and huge counts in cards ------------------------------------------------

CARD = render_card(resolve_card("gpt-mini"))
NUMBER_KEYS = ["vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_positions", "layer_norm_eps", "dropout"]
NUMBERS = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "+nan", "1e308", "1e-310", "-0.0", "0"]),
    st.sampled_from([str(10**k) for k in (6, 9, 12, 18, 19, 30, 400)] + [str(-(10**k)) for k in (1, 9, 19)]),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f) if math.isfinite(f) else str(f)),
    st.integers(-(2**70), 2**70).map(str),
)


@fuzz(700)
@given(st.sampled_from(NUMBER_KEYS), NUMBERS)
def test_card_numbers(key, number):
    lines = [line for line in CARD.splitlines() if not line.startswith(f"{key} =")]
    at = lines.index("[model]") + 1
    text = "\n".join([*lines[:at], f"{key} = {number}", *lines[at:]]) + "\n"
    outcome("files: card numbers", lambda: load_card(_place("card", text.encode())), CardError)

"""Property-based: generated model cards, targets and input declarations, valid and malformed
(wrong types, out-of-range values, missing and unknown keys, truncated text, random bytes), go
through the parsers. Each either loads or raises the library's typed error; nothing else."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import fuzz, outcome

from edgeformer.config import (
    ACTIVATIONS,
    ATTENTION,
    CARD_KEYS,
    FAMILIES,
    HEADS,
    NORMS,
    POOLING,
    POSITIONS,
    ModelCard,
    ModelConfig,
    _toml_value,
    load_card,
    parse_card,
    render_card,
)
from edgeformer.errors import CardError, ExportError
from edgeformer.export.user import load_io, parse_io
from edgeformer.targets import FUSION_FORMS, PRECISIONS, TARGET_KEYS, Target, load_target, parse_target
from edgeformer.zoo import card_names, cards_dir, resolve_card, resolve_target, target_names, targets_dir

CHOICES = {
    "family": FAMILIES,
    "positions": POSITIONS,
    "attention": ATTENTION,
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "head": HEADS,
    "pooling": POOLING,
}
FIELDS = {f.name: str(f.type) for f in dataclasses.fields(ModelConfig)}
SHIPPED_CARDS = [p.read_text(encoding="utf-8") for p in sorted(cards_dir().glob("*.toml"))]
SHIPPED_TARGETS = [p.read_text(encoding="utf-8") for p in sorted(targets_dir().glob("*.toml"))]

# any TOML value, including the ones no card key takes
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
)
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def _model_value(key: str) -> st.SearchStrategy:
    """Mostly plausible values of the key's type (in and out of range), sometimes any value."""
    kind = FIELDS[key]
    if key in CHOICES:
        typed = st.one_of(st.sampled_from(CHOICES[key]), st.text(max_size=8))
    elif kind == "int":
        typed = st.one_of(st.integers(-3, 130), st.sampled_from([0, 1, 2, 4, 8, 64, 128, 1024, 2**40]))
    elif kind == "float":
        typed = st.one_of(st.floats(-1, 2), st.sampled_from([0.0, 1e-12, 0.999, float("nan"), float("inf")]))
    else:
        typed = st.booleans()
    return st.one_of(typed, typed, typed, toml_values)


SHIPPED_DICTS = [tomllib.loads(t) for t in SHIPPED_CARDS]


@st.composite
def card_dicts(draw: st.DrawFn) -> dict:
    """A shipped card with 0-3 changes: a key dropped, a [model] value replaced by a plausible or an
    arbitrary one (wrong type, out of range), a card-level value replaced, an unknown key added."""
    data = copy.deepcopy(draw(st.sampled_from(SHIPPED_DICTS)))
    data.pop("checkpoint", None)  # the weights file is not the parser's business
    data.pop("checkpoint_sha256", None)
    for _ in range(draw(st.integers(0, 3))):
        model = data.get("model")
        change = draw(st.sampled_from(["model value", "model value", "drop model key", "card value", "drop", "new"]))
        if change == "model value" and isinstance(model, dict):
            key = draw(st.sampled_from(sorted(FIELDS)))
            model[key] = draw(_model_value(key))
        elif change == "drop model key" and isinstance(model, dict) and model:
            model.pop(draw(st.sampled_from(sorted(model))))
        elif change == "card value":
            key = draw(st.sampled_from(sorted(CARD_KEYS - {"checkpoint"})))
            data[key] = draw(st.one_of(toml_values, st.dictionaries(st.text(max_size=4), scalars, max_size=2)))
        elif change == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif change == "new":
            where = model if isinstance(model, dict) and draw(st.booleans()) else data
            where[draw(st.text(min_size=1, max_size=8))] = draw(toml_values)
    return data


def _toml(data: dict) -> str:
    """TOML text of a card dict: scalars first, then one table per dict value."""
    lines, tables = [], []
    for key, value in data.items():
        (tables if isinstance(value, dict) else lines).append((key, value))

    def line(k: str, v: object) -> str:
        if isinstance(v, float) and v != v:
            return f"{_key(k)} = nan"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return f"{_key(k)} = {'-' if v < 0 else ''}inf"
        return f"{_key(k)} = {_toml_value(v)}"

    out = [line(k, v) for k, v in lines]
    for name, table in tables:
        out += [f"[{_key(name)}]"] + [line(k, v) for k, v in table.items() if not isinstance(v, dict)]
    return "\n".join(out) + "\n"


def _key(k: str) -> str:
    return '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SCRATCH: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _scratch(tmp_path_factory):
    _SCRATCH.append(tmp_path_factory.mktemp("cards"))
    yield
    _SCRATCH.clear()


def _write(data: bytes) -> Path:
    """The generated bytes as the one scratch card file (rewritten for every case)."""
    path = _SCRATCH[0] / "card.toml"
    path.write_bytes(data)
    return path


def _check_card(result: object) -> None:
    if isinstance(result, ModelCard):
        again = parse_card(tomllib.loads(render_card(result)))  # a loaded card renders and reloads
        assert again.config == result.config


@fuzz(250)
@given(card_dicts())
def test_generated_card_dicts(data):
    _check_card(outcome("card dict", lambda: parse_card(data), CardError))


@fuzz(120)
@given(card_dicts())
def test_generated_card_files(data):
    try:
        text = _toml(data)
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError):
        text = 'name = "x"\n'  # a key this little writer cannot spell (control characters...)
    _check_card(outcome("card file", lambda: load_card(_write(text.encode("utf-8"))), CardError))


@st.composite
def damaged(draw: st.DrawFn, texts: list[str]) -> bytes:
    """A shipped file truncated, with bytes overwritten or inserted, or replaced by random bytes."""
    data = bytearray(draw(st.sampled_from(texts)).encode("utf-8"))
    how = draw(st.sampled_from(["truncate", "overwrite", "insert", "random", "empty"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if how == "overwrite":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:])
    return b"" if how == "empty" else draw(st.binary(max_size=200))


@fuzz(150)
@given(damaged(SHIPPED_CARDS))
def test_damaged_card_files(data):
    _check_card(outcome("damaged card", lambda: load_card(_write(data)), CardError))


TARGET_VALUES = {
    "name": st.one_of(st.text(min_size=1, max_size=8), st.just("")),
    "description": st.text(max_size=10),
    "precision": st.one_of(st.sampled_from(PRECISIONS), st.sampled_from(["fp8", "int2", ""])),
    "opset": st.one_of(st.integers(10, 30), st.booleans()),
    "providers": st.lists(st.sampled_from(["cpu", "cuda", "xnnpack", "nope"]), max_size=3),
    "fusions": st.one_of(st.sampled_from(FUSION_FORMS), st.text(max_size=6)),
    "budget": st.dictionaries(
        st.sampled_from(["cosine", "top1", "perplexity", "nope"]), st.one_of(st.floats(0, 2), scalars), max_size=2
    ),
}
SHIPPED_TARGET_DICTS = [tomllib.loads(t) for t in SHIPPED_TARGETS]


@st.composite
def target_dicts(draw: st.DrawFn) -> dict:
    """A shipped target with 0-3 changes: a key dropped, a value replaced (plausible or arbitrary;
    keys added to targets later get arbitrary ones), an unknown key added."""
    data = copy.deepcopy(draw(st.sampled_from(SHIPPED_TARGET_DICTS)))
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["value", "value", "drop", "new"]))
        if change == "value":
            key = draw(st.sampled_from(sorted(TARGET_KEYS)))
            data[key] = draw(st.one_of(TARGET_VALUES.get(key, toml_values), toml_values))
        elif change == "drop" and data:
            data.pop(draw(st.sampled_from(sorted(data))))
        elif change == "new":
            data[draw(st.text(min_size=1, max_size=8))] = draw(toml_values)
    return data


@fuzz(150)
@given(target_dicts())
def test_generated_targets(data):
    result = outcome("target dict", lambda: parse_target(data), CardError)
    if isinstance(result, Target):
        assert result.precision in PRECISIONS and 17 <= result.opset <= 23


@fuzz(100)
@given(damaged(SHIPPED_TARGETS))
def test_damaged_target_files(data):
    outcome("damaged target", lambda: load_target(_write(data)), CardError)


io_tables = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.one_of(
            st.dictionaries(
                st.text(min_size=1, max_size=6),
                st.one_of(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "dtype": st.one_of(st.sampled_from(["int64", "float32", "bool", "int8"]), toml_values),
                            "shape": st.one_of(st.lists(st.one_of(st.integers(-2, 9), st.text(max_size=4))), scalars),
                            "high": st.one_of(st.integers(-2, 2000), scalars),
                        },
                    ),
                    toml_values,
                ),
                max_size=3,
            ),
            toml_values,
        ),
        "dims": st.one_of(st.dictionaries(st.text(min_size=1, max_size=4), st.integers(-1, 99), max_size=2), scalars),
        "outputs": st.one_of(st.lists(st.text(max_size=4), max_size=2), scalars),
    },
)


@fuzz(100)
@given(io_tables)
def test_generated_io_declarations(data):
    outcome("io declaration", lambda: parse_io(data), ExportError)


@fuzz(40)
@given(st.binary(max_size=120))
def test_random_io_files(data):
    outcome("io file", lambda: load_io(_write(data)), ExportError)


names = st.one_of(
    st.sampled_from(card_names() + target_names()),
    st.text(max_size=20),
    st.text(max_size=8).map(lambda t: t + ".toml"),
    st.sampled_from(["", ".", "..", "/", "/tmp", "a\x00b", "a\x00b.toml", "x" * 300, "x" * 5000 + ".toml", "~"]),
)


@fuzz(100)
@given(names)
def test_generated_card_and_target_names(name):
    outcome("card or target name", lambda: resolve_card(name), CardError)
    outcome("card or target name", lambda: resolve_target(name), CardError)

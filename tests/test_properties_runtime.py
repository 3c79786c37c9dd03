"""Property-based: generated inputs, good and bad, through loaded runtime models of small bundles.

Token ids as lists, nested lists and arrays of every dtype and rank, lengths up to and beyond the
model's max_positions, empty prompts and rows, ids outside the vocabulary, padded batches with and
without masks, text and non-UTF-8 bytes, and generation options of every type. Every call either
returns a result of the right shape or raises the runtime's typed input error (InputError or
OptionError); onnxruntime itself must never be the one to complain (InferenceError would mean a
bad input got past the checks), and nothing untyped may escape.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import fuzz, outcome, with_word_tokenizer

from edgeformer import runtime
from edgeformer.runtime.bundle import stamp_manifest

INPUT_ERRORS = (runtime.InputError, runtime.OptionError)
VOCAB, MAX_POS = 1024, 128  # the edge cards' vocabulary and positions
DTYPES = ["int64", "int32", "int8", "uint8", "uint64", "float32", "float16", "float64", "bool", "complex64", "U3", "O"]


@pytest.fixture(scope="module")
def models(edge_bundle, tmp_path_factory):
    """bert-mini, gpt-mini, transformer-mini, and gpt-mini relabelled as byte-level (text in) and
    with a Hugging Face tokenizer.json (when the tokenizers library is installed)."""
    text_bundle = tmp_path_factory.mktemp("bytes") / "gpt-mini-bytes"
    shutil.copytree(edge_bundle("gpt-mini"), text_bundle)
    manifest = json.loads((text_bundle / "manifest.json").read_text())
    manifest["tokenizer"] = "bytes"  # ids 0-258 are inside gpt-mini's 1024: text runs through it
    (text_bundle / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(text_bundle)  # the digest follows the edit
    load = {"spinning": False, "threads": 1}
    words = with_word_tokenizer(edge_bundle("gpt-mini"), tmp_path_factory.mktemp("words") / "gpt-mini-words")
    return {
        "encoder": runtime.load(edge_bundle("bert-mini"), **load),
        "decoder": runtime.load(edge_bundle("gpt-mini"), **load),
        "seq2seq": runtime.load(edge_bundle("transformer-mini"), **load),
        "text": runtime.load(text_bundle, **load),
        "words": runtime.load(words, **load) if words else None,
    }


ids = st.integers(min_value=-3, max_value=VOCAB + 3)  # a few outside [0, VOCAB)
good_ids = st.integers(min_value=0, max_value=VOCAB - 1)
lengths = st.one_of(st.integers(0, 12), st.sampled_from([MAX_POS - 1, MAX_POS, MAX_POS + 1, 300]))


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    """An array of any listed dtype, rank 0-3, sizes including 0 and beyond max_positions."""
    rank = draw(st.sampled_from([2, 2, 1, 1, 0, 3]))
    shape = tuple(draw(st.integers(1, 3)) if axis < rank - 1 else draw(lengths) for axis in range(rank))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    values = np.asarray(draw(st.lists(ids, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    if dtype.kind == "U":
        return values.astype(str).reshape(shape)
    if dtype.kind == "O":
        return values.astype(object).reshape(shape)
    with np.errstate(all="ignore"):
        return values.astype(dtype).reshape(shape)


@st.composite
def good_inputs(draw: st.DrawFn) -> object:
    """Valid token ids: one list, a ragged batch (padded by the runtime), or an int array."""
    row = st.lists(good_ids, min_size=1, max_size=12)
    kind = draw(st.sampled_from(["list", "batch", "array"]))
    if kind == "list":
        return draw(row)
    if kind == "batch":
        return draw(st.lists(row, min_size=1, max_size=4))
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    dtype = draw(st.sampled_from(["int64", "int32", "int16", "uint16"]))
    flat = draw(st.lists(good_ids, min_size=batch * length, max_size=batch * length))
    array = np.asarray(flat, dtype=dtype).reshape(batch, length)
    return array[0] if draw(st.booleans()) else array


@st.composite
def bad_lists(draw: st.DrawFn) -> object:
    """Lists with ids outside the vocabulary, empty rows, or rows beyond max_positions."""
    row = st.lists(ids, max_size=12)
    long_row = st.lists(good_ids, min_size=MAX_POS - 2, max_size=MAX_POS + 2)
    if draw(st.booleans()):
        return draw(st.one_of(row, long_row))
    return draw(st.lists(st.one_of(row, long_row, st.just([])), max_size=4))


odd = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.booleans(),
    st.just({"input_ids": [1, 2]}),
    st.lists(st.one_of(st.floats(), st.booleans(), st.none(), st.text(max_size=2)), min_size=1, max_size=3),
    st.lists(st.lists(st.one_of(ids, st.floats()), max_size=3), max_size=3),
    st.just([[1, 2], 3]),
    st.just([[[1, 2]]]),
    st.just([2**70, 1]),
)
text = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs", "Ll", "Zs", "So"]), min_size=1, max_size=6),  # lone surrogates too
    st.binary(max_size=20),
    st.lists(st.one_of(st.text(max_size=8), st.binary(max_size=8)), max_size=3),
    st.just("x" * (MAX_POS + 5)),
)
bad_inputs = st.one_of(bad_lists(), arrays(), odd, text)


def masks(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["none", "ones", "random", "array"]))
    if kind == "none":
        return None
    if kind == "array":
        return draw(arrays())
    return draw(st.lists(st.integers(-1, 2) if kind == "random" else st.just(1), min_size=0, max_size=8))


def _rows(inputs: object) -> list[int]:
    """Lengths of the rows of valid token inputs."""
    array = inputs if isinstance(inputs, np.ndarray) else None
    if array is not None:
        return [array.shape[-1]] * (1 if array.ndim == 1 else array.shape[0])
    return [len(inputs)] if isinstance(inputs[0], int) else [len(r) for r in inputs]


good_generation = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.one_of(st.just(0.0), st.floats(0.1, 2.0)),
        "top_k": st.integers(0, 50),
        "top_p": st.floats(0.05, 1.0),
        "seed": st.one_of(st.none(), st.integers(0, 2**32)),
    },
)
bad_generation = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.one_of(st.floats(-1, 3), st.text(max_size=2), st.none()),
        "top_k": st.one_of(st.integers(-2, 2000), st.floats(0, 5), st.booleans()),
        "top_p": st.one_of(st.floats(-0.5, 1.5), st.just(float("nan")), st.integers(0, 2)),
        "seed": st.one_of(st.none(), st.integers(-5, 2**64), st.text(max_size=2), st.booleans()),
        "stop_tokens": st.one_of(st.none(), ids, st.lists(ids, max_size=3), st.text(max_size=2), st.just([1.5])),
    },
)
bad_new_tokens = st.one_of(st.integers(-2, 4), st.sampled_from([MAX_POS, 2**40]), st.floats(0, 3), st.none())


# ----- valid inputs: every one must give a result of the right shape -----------------------------


@fuzz(80)
@given(good_inputs())
def test_encoder_valid_inputs(models, inputs):
    result = outcome("valid encoder encode", lambda: models["encoder"].encode(inputs), ())
    rows = _rows(inputs)
    assert result["last_hidden_state"].shape == (len(rows), max(rows), 128)
    assert result["embeddings"].shape == (len(rows), 128) and np.isfinite(result["embeddings"]).all()


@fuzz(80)
@given(good_inputs(), st.integers(1, 4), good_generation)
def test_decoder_valid_inputs(models, inputs, steps, options):
    model, rows = models["decoder"], _rows(inputs)
    logits = outcome("valid decoder logits", lambda: model.logits(inputs), ())
    assert logits.shape == (len(rows), max(rows), VOCAB) and np.isfinite(logits).all()
    tokens = outcome("valid decoder generate", lambda: model.generate(inputs, steps, stop_tokens=(), **options), ())
    tokens = [tokens] if isinstance(tokens[0], int) else tokens
    assert [len(t) for t in tokens] == [steps] * len(rows)
    assert all(0 <= t < VOCAB for row in tokens for t in row)


@fuzz(50)
@given(good_inputs(), st.integers(1, 4), good_generation)
def test_seq2seq_valid_inputs(models, inputs, steps, options):
    model, rows = models["seq2seq"], _rows(inputs)
    encoded = outcome("valid seq2seq encode", lambda: model.encode(inputs), ())
    assert encoded["last_hidden_state"].shape == (len(rows), max(rows), 128)
    tokens = outcome("valid seq2seq generate", lambda: model.generate(inputs, steps, stop_tokens=(), **options), ())
    tokens = [tokens] if isinstance(tokens[0], int) else tokens
    assert [len(t) for t in tokens] == [steps] * len(rows)


# ----- anything: a result or a typed error --------------------------------------------------------


@fuzz(120)
@given(st.data())
def test_encoder_any_inputs(models, data):
    model = models["encoder"]
    inputs, mask = data.draw(st.one_of(good_inputs(), bad_inputs)), masks(data.draw)
    result = outcome("any encoder encode", lambda: model.encode(inputs, attention_mask=mask), INPUT_ERRORS)
    if isinstance(result, dict):
        hidden = result["last_hidden_state"]
        assert hidden.ndim == 3 and hidden.shape[-1] == 128 and np.isfinite(hidden).all()


@fuzz(160)
@given(st.data())
def test_decoder_any_inputs(models, data):
    model = models["decoder"]
    inputs = data.draw(st.one_of(good_inputs(), bad_inputs))
    call = data.draw(st.sampled_from(["logits", "generate", "stream"]))
    if call == "logits":
        mask = masks(data.draw)
        result = outcome("any decoder logits", lambda: model.logits(inputs, attention_mask=mask), INPUT_ERRORS)
        if isinstance(result, np.ndarray):
            assert result.ndim == 3 and result.shape[-1] == VOCAB and np.isfinite(result).all()
        return
    steps = data.draw(st.one_of(st.integers(1, 3), bad_new_tokens))
    options = data.draw(st.one_of(good_generation, bad_generation))
    if call == "generate":
        outcome("any decoder generate", lambda: model.generate(inputs, steps, **options), INPUT_ERRORS)
    else:
        outcome("any decoder stream", lambda: list(model.stream(inputs, steps, **options)), INPUT_ERRORS)


@fuzz(100)
@given(st.data())
def test_seq2seq_any_inputs(models, data):
    model = models["seq2seq"]
    inputs, mask = data.draw(st.one_of(good_inputs(), bad_inputs)), masks(data.draw)
    if data.draw(st.booleans()):
        result = outcome("any seq2seq encode", lambda: model.encode(inputs, attention_mask=mask), INPUT_ERRORS)
        if isinstance(result, dict):
            assert result["last_hidden_state"].ndim == 3
        return
    steps = data.draw(st.one_of(st.integers(1, 3), bad_new_tokens))
    options = data.draw(st.one_of(good_generation, bad_generation))
    outcome("any seq2seq generate", lambda: model.generate(inputs, steps, attention_mask=mask, **options), INPUT_ERRORS)


@fuzz(120)
@given(text, st.integers(1, 3), st.sampled_from(["text", "words"]))
def test_text_inputs(models, value, steps, tokenizer):
    model = models[tokenizer] or models["text"]
    result = outcome(f"{tokenizer} generate", lambda: model.generate(value, steps, stop_tokens=()), INPUT_ERRORS)
    if not isinstance(result, Exception):
        assert isinstance(result, str | list)
    outcome(f"{tokenizer} logits", lambda: model.logits(value), INPUT_ERRORS)


@fuzz(80)
@given(st.data())
def test_raw_feeds(models, data):
    """``run`` with raw feeds: any names, dtypes and ranks against the manifest's specs."""
    model = models[data.draw(st.sampled_from(["encoder", "decoder"]))]
    names = [s.name for s in model.bundle.graphs["model"].inputs]
    chosen = data.draw(st.lists(st.sampled_from([*names, "nope"]), max_size=len(names) + 1, unique=True))
    feeds = {n: data.draw(arrays()) for n in chosen}
    outcome("raw feeds", lambda: model.run(feeds), (*INPUT_ERRORS, runtime.InferenceError))

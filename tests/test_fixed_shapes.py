"""A fixed-shape bundle (NNAPI / CoreML / QNN targets) is checked at its one shape: real inputs are
padded to it, or refused naming it; never an onnxruntime traceback ("Expected: 128", issue #19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeformer import runtime, tokenizer
from edgeformer.cli import main
from edgeformer.export.source import source_from_card
from edgeformer.nn.checkpoint import load_model
from edgeformer.pipeline import export_bundle
from edgeformer.zoo import resolve_card, resolve_target

TEXT = "Return the absolute value."  # 26 bytes, shorter than the fixed 32
TARGET = """name = "fixed-test"
description = "NNAPI's graph form at a small fixed shape"
precision = "fp32"
opset = 18
providers = ["nnapi", "cpu"]
fusions = "nnapi"

[static_shapes]
batch = 2
sequence = 32
"""


@pytest.fixture(scope="module")
def fixed_bundle(tmp_path_factory):
    """The byte-level demo encoder at batch 2, sequence 32 (exported without its check: the check is tested)."""
    root = tmp_path_factory.mktemp("fixed")
    (root / "fixed.toml").write_text(TARGET)
    source = source_from_card(resolve_card("demo-encoder"))
    export_bundle(source, resolve_target(str(root / "fixed.toml")), root / "b", check=False)
    return root


def _check(*args: str):
    result = CliRunner().invoke(main, ["check", *args], catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "Expected:" not in result.output, result.output
    return result


def test_a_fixed_shape_bundle_is_checked_at_its_shape(fixed_bundle):
    result = _check(str(fixed_bundle / "b"))
    assert result.exit_code == 0 and "parity ok" in result.output, result.output
    assert "1 shapes" in result.output  # the one shape the graph takes


def test_short_text_is_padded_to_the_fixed_shape(fixed_bundle):
    result = _check(str(fixed_bundle / "b"), "--text", TEXT)
    assert result.exit_code == 0 and "parity ok" in result.output, result.output
    assert "2 shapes" in result.output  # the fixed shape, and the text padded to it


def test_short_npz_inputs_are_padded_to_the_fixed_shape(fixed_bundle, tmp_path):
    np.savez(tmp_path / "short.npz", input_ids=np.array([[10, 20, 30, 40, 50]]))
    result = _check(str(fixed_bundle / "b"), "--inputs", str(tmp_path / "short.npz"))
    assert result.exit_code == 0 and "parity ok" in result.output, result.output


@pytest.mark.parametrize("shape", [(1, 33), (3, 5)])
def test_inputs_larger_than_the_fixed_shape_are_refused_naming_it(fixed_bundle, tmp_path, shape):
    np.savez(tmp_path / "big.npz", input_ids=np.ones(shape, dtype=np.int64))
    result = _check(str(fixed_bundle / "b"), "--inputs", str(tmp_path / "big.npz"))
    assert result.exit_code == 1
    assert "fixed shape (batch 2, sequence 32)" in result.output and f"{shape[0]} row(s) of {shape[1]}" in result.output


def test_runtime_pads_shorter_inputs_and_refuses_longer_ones(fixed_bundle):
    model = runtime.load(fixed_bundle / "b", spinning=False)
    texts = [TEXT, "abs", "Sort the list."]  # three rows: two runs of the fixed batch of 2
    got = model.logits(texts)
    rows = [tokenizer.encode(t) for t in texts]  # the demo encoder reads bytes without begin-of-text
    torch_model = load_model(resolve_card("demo-encoder"))
    with torch.no_grad():
        want = np.concatenate([torch_model(torch.tensor([r]))["logits"].numpy() for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    with pytest.raises(runtime.SequenceTooLongError, match="32"):
        model.logits("x" * 33)

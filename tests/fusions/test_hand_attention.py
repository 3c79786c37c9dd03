"""A user's module with hand-written attention (masked_fill(mask, -inf) + softmax), exported with
`edgeformer export module:factory --io io.toml`: every attention block fuses, with parity, and a
query that sees no key (left padding) stays finite."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from fixtures import hand_attention

from edgeformer.cli import main
from edgeformer.export.source import source_from_factory


@pytest.mark.parametrize(
    ("factory", "target", "op"),
    [("causal", "cpu-fp32", "MultiHeadAttention"), ("padded", "portable-fp32", "Attention")],
)
def test_hand_written_attention_fuses_and_left_padding_stays_finite(tmp_path, factory, target, op):
    io_file = tmp_path / "myio.toml"
    io_file.write_text(hand_attention.IO)
    out = tmp_path / "bundle"
    spec = f"fixtures.hand_attention:{factory}"
    args = ["export", spec, "--io", str(io_file), "--target", target, "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output and "NOT FUSED" not in result.output
    report = json.loads((out / "manifest.json").read_text())["fusions"]["model"]
    assert report["coverage"]["attention"] == {"blocks": 2, "fused": 2}, report["not_fused"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node]
    assert ops.count(op) == 2 and "Softmax" not in ops
    ids = np.random.default_rng(1).integers(0, 64, (2, 9))
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, :3] = 0  # left padding: the first three queries of the second row see no key
    logits = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert np.isfinite(logits).all()
    module = source_from_factory(spec, io=tomllib.loads(hand_attention.IO)).plans[0].module
    with torch.no_grad():
        alone = module(torch.from_numpy(ids[1:, 3:]), torch.ones(1, 6, dtype=torch.int64))[0].numpy()
    np.testing.assert_allclose(logits[1, 3:], alone[0], atol=1e-4)  # padding changes nothing real

"""torch's own nn.TransformerEncoder, exported by either torch.onnx exporter, fuses every attention
block with parity after every pass."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from edgeformer.fusions.pipeline import fuse_model
from edgeformer.fusions.standalone import graph_feeds
from tests.fusions.helpers import run

WIDTH, SEQUENCE = 32, 7  # TorchScript fixes nn.MultiheadAttention's key length at the traced one


class Encoder(torch.nn.Module):
    def __init__(self, norm_first: bool) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(WIDTH, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, padded: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x, src_key_padding_mask=padded)


def _export(module: torch.nn.Module, args: tuple, dynamo: bool) -> ir.Model:
    names = ["x", "padded"][: len(args)]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    if dynamo:
        program = torch.onnx.export(module, args, input_names=names, output_names=["y"], dynamo=True, dynamic_axes=axes)
        return ir.from_proto(program.model_proto)
    buffer = io.BytesIO()
    torch.onnx.export(
        module, args, buffer, input_names=names, output_names=["y"], dynamo=False, opset_version=17, dynamic_axes=axes
    )
    return ir.from_proto(onnx.load_from_string(buffer.getvalue()))


@pytest.mark.parametrize(
    ("norm_first", "masked", "dynamo"),
    [(False, False, False), (False, True, False), (True, False, False), (True, True, False), (False, True, True)],
    ids=["post-norm", "post-norm-padded", "pre-norm", "pre-norm-padded", "dynamo-padded"],
)
def test_torch_transformer_encoder_fuses_both_layers(norm_first, masked, dynamo):
    module = Encoder(norm_first).eval()
    x = torch.randn(2, SEQUENCE, WIDTH)
    padded = torch.zeros(2, SEQUENCE, dtype=torch.bool)
    padded[1, 4:] = True  # the second item is 4 tokens long
    args = (x, padded) if masked else (x,)
    model = _export(module, args, dynamo)
    feeds = {**graph_feeds(model), "x": x.numpy()} | ({"padded": padded.numpy()} if masked else {})
    report = fuse_model(model, "contrib", feeds=[feeds])
    assert report.coverage["attention"] == {"blocks": 2, "fused": 2}, report.not_fused
    assert not any(p.rolled_back for p in report.passes), [(p.name, p.rolled_back) for p in report.passes]
    assert report.check == "once" and report.max_rel_error <= 1e-4, report.passes  # the fused graph, checked
    ops = Counter(n.op_type for n in model.graph.all_nodes())
    assert ops["MultiHeadAttention"] + ops["Attention"] == 2 and ops["Softmax"] == 0
    with torch.no_grad():
        expected = module(*args).numpy()
    got = run(model, feeds)[0]
    keep = ~padded.numpy() if masked else np.ones((2, SEQUENCE), dtype=bool)
    np.testing.assert_allclose(got[keep], expected[keep], atol=1e-4)  # torch gives padded rows 0 (nested tensors)

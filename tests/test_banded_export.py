"""The exported graphs of banded attention (issue #23): a local and a sparse encoder through the export
pipeline on the portable target keep the band (a Softmax over (batch, heads, blocks, block, keys)), pass the
product's own parity check, and the fusion report says why attention did not fuse; the contrib forms trace
the dense masked attention their MultiHeadAttention fusion matches."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

from edgeformer import runtime
from edgeformer.config import parse_card
from edgeformer.export.source import source_from_card
from edgeformer.export.trace import attention_for
from edgeformer.fusions.miss_reasons import BANDED
from edgeformer.nn.layers import attention_impl
from edgeformer.nn.models import build_model
from edgeformer.pipeline import export_bundle
from edgeformer.zoo import resolve_target

PATTERNS = {
    "local": dict(attention="local", window=8, global_tokens=1),
    "sparse": dict(attention="sparse", sparse_stride=4),
}


def _card(pattern: str):
    model = dict(family="encoder", vocab_size=64, d_model=16, n_heads=2, n_layers=1, max_positions=64,
                 activation="gelu", head="embedding", pooling="mean", **PATTERNS[pattern])  # fmt: skip
    return parse_card({"name": f"{pattern}-tiny", "model": model})


@pytest.mark.parametrize("pattern", PATTERNS)
def test_portable_export_is_banded_checked_and_says_why_attention_did_not_fuse(pattern, tmp_path):
    manifest = export_bundle(source_from_card(_card(pattern)), resolve_target("portable-fp32"), tmp_path / "b")
    graph = ir.load(tmp_path / "b" / "model.onnx").graph
    softmax = [n for n in graph.all_nodes() if n.op_type == "Softmax"]
    assert [n.inputs[0].shape.rank() for n in softmax] == [5]  # the band; the global rows fused into Attention
    report = manifest["fusions"]["model"]
    assert [(m["kind"], m["reason"]) for m in report["not_fused"]] == [("attention", BANDED)]
    assert manifest["parity"]["ok"] is True and manifest["parity"]["worst_max_rel"] <= 1e-4
    # past two blocks of the window, the bundle still gives the masked torch reference's numbers
    torch.manual_seed(0)
    model = build_model(_card(pattern).config).eval()
    ids = np.random.default_rng(0).integers(0, 64, (2, 50))
    mask = np.ones((2, 50), dtype=np.int64)
    mask[1, 37:] = 0
    with torch.no_grad(), attention_impl(model, "dense"):
        want = model(torch.from_numpy(ids), torch.from_numpy(mask))["last_hidden_state"].numpy()
    got = runtime.load(tmp_path / "b", spinning=False).run({"input_ids": ids, "attention_mask": mask})
    real = mask.astype(bool)
    assert np.abs(got["last_hidden_state"][real] - want[real]).max() / np.abs(want[real]).max() <= 1e-4


def test_forms_and_implementations():
    assert [attention_for(f) for f in ("none", "standard", "contrib", "nnapi")] == [
        "banded",
        "banded",
        "dense",
        "dense",
    ]
    model = build_model(_card("local").config)
    with attention_impl(model, "banded"):
        assert {b.attention_impl for b in model.encoder.layers} == {"banded"}
    assert {b.attention_impl for b in model.encoder.layers} == {"auto"}
    with pytest.raises(ValueError, match="'fast' is not one of auto, banded, dense"), attention_impl(model, "fast"):
        pass

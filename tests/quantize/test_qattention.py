"""Self-attention of int8 encoders as QAttention: which blocks qualify, and the numbers it gives."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeformer.export.manifest_read import read_manifest
from edgeformer.export.source import source_from_card
from edgeformer.pipeline import export_bundle
from edgeformer.quantize import calibration, int8, qattention
from edgeformer.quantize.mixed import _session, outputs_of
from edgeformer.zoo import resolve_card, resolve_target


@pytest.fixture(scope="module")
def mha_form(tmp_path_factory):
    """card -> (fused fp32 graph with attention as MultiHeadAttention, the form int8 starts from; feeds)"""
    root = tmp_path_factory.mktemp("mha")
    made = {}

    def get(name: str):
        if name not in made:
            out = root / name
            export_bundle(
                source_from_card(resolve_card(name)),
                resolve_target("cpu-fp32"),
                out,
                check=False,
                packed_attention=False,
            )
            manifest = read_manifest(out)
            rows = calibration.load_rows(manifest["config"], manifest.get("tokenizer"), n=4, length=32)
            rows.mask[0, 20:] = 0  # padded rows, so the mask matters
            rows.mask[2, 5:] = 0
            feeds = calibration.graph_feeds(manifest, rows, batch=4)
            made[name] = (manifest, {g: int8.name_nodes(onnx.load(str(out / f"{g}.onnx"))) for g in feeds}, feeds)
        return made[name]

    return get


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _int8_outputs(model, feeds, tmp_path, name):
    path = int8.quantize_dynamic(model, tmp_path / f"{name}.onnx", reduce_range=False)
    return outputs_of(_session(path), feeds)


def test_encoder_attention_becomes_one_qattention_per_layer_with_the_same_numbers(mha_form, tmp_path):
    manifest, graphs, feeds = mha_form("bert-mini")
    model = graphs["model"]
    blocks = qattention.plan(model, feeds["model"])
    layers = manifest["config"]["n_layers"]
    assert len(blocks) == layers and {b.mask for b in blocks} == {"attention_bias"}  # a padding mask, checked
    fused, done = qattention.apply(model, blocks)
    assert done == layers
    ops = _ops(fused)
    assert ops.get("QAttention") == layers and "MultiHeadAttention" not in ops and "Where" not in ops  # mask math gone
    three_kernels = _int8_outputs(model, feeds["model"], tmp_path, "mha")
    one_kernel = _int8_outputs(fused, feeds["model"], tmp_path, "qattention")
    for a, b in zip(three_kernels, one_kernel, strict=True):
        for key in a:  # the same int8 products and the same padding mask: equal up to float rounding
            scale = float(np.abs(a[key]).max())
            np.testing.assert_allclose(b[key], a[key], atol=1e-4 * scale, rtol=0, err_msg=key)


def test_a_projection_kept_in_float_keeps_its_attention(mha_form):
    _, graphs, feeds = mha_form("bert-mini")
    blocks = qattention.plan(graphs["model"], feeds["model"])
    fused, done = qattention.apply(graphs["model"], blocks, exclude={blocks[0].matmul})
    assert done == len(blocks) - 1
    assert _ops(fused)["MultiHeadAttention"] == 1 and blocks[0].matmul in {n.name for n in fused.graph.node}


def test_local_window_masks_and_kv_caches_are_left_alone(mha_form):
    """QAttention takes a padding mask only: a local-window bias fails the check on sample masks;
    a decoder's attention reads a KV cache in a layout QAttention does not take."""
    _, graphs, feeds = mha_form("local-mini")
    assert qattention.plan(graphs["model"], feeds["model"]) == []
    _, graphs, feeds = mha_form("gpt-mini")
    assert qattention.plan(graphs["model"], feeds["model"]) == []


def test_the_padding_check_by_hand():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    padding = np.where(mask[:, None, None, :] == 1, 0.0, -1e9).astype(np.float32)  # (B, 1, 1, S)
    assert qattention._is_padding_bias(padding, mask)
    assert qattention._is_padding_bias(np.broadcast_to(padding, (2, 1, 3, 3)), mask)
    causal = padding + np.triu(np.full((3, 3), -1e9, dtype=np.float32), 1)
    assert not qattention._is_padding_bias(causal, mask)
    assert not qattention._is_padding_bias(np.where(padding < 0, -10.0, 0.0), mask)  # too weak to remove a key

"""What mypy found (issue #20): each test fails on the code before the type fixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgeformer.cli import main
from edgeformer.errors import ParityError
from edgeformer.export.graphs import plan_graphs
from edgeformer.nn.layers import Block
from tests.conftest import card_config


def test_check_json_with_refused_real_inputs_is_one_message(tmp_path, edge_bundle):
    """``check --json`` read ``exc.report`` of every ParityError; one raised before the check ran
    (real inputs refused) has none: AttributeError and a traceback, exit code 1 by accident."""
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.array([[1, 2, 10**6]], dtype=np.int64))
    result = CliRunner().invoke(main, ["check", str(edge_bundle("bert-mini")), "--inputs", str(bad), "--json"])
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    assert "Error: input_ids has values outside [0, 1024)" in result.output
    assert "Traceback" not in result.output and "{" not in result.output


def test_parity_error_carries_its_report_or_none():
    assert ParityError("inputs refused").report is None

    class Report:
        def to_dict(self) -> dict[str, object]:
            return {"ok": False}

    error = ParityError("failed")
    error.report = Report()
    assert error.report.to_dict() == {"ok": False}


def test_encoder_decoder_plans_need_the_encoder_decoder_model():
    cfg = card_config("transformer-mini")
    with pytest.raises(TypeError, match="an encoder-decoder card's model is an EncoderDecoderModel, got Linear"):
        plan_graphs(nn.Linear(2, 2), cfg)


def test_cross_key_values_of_a_layer():
    cfg = card_config("transformer-mini")
    memory = torch.randn(2, 5, cfg.d_model)  # (B, S, C)
    k, v = Block(cfg, cross=True).cross_key_values(memory)
    assert tuple(k.shape) == tuple(v.shape) == (2, cfg.n_heads, 5, cfg.d_model // cfg.n_heads)
    with pytest.raises(ValueError, match="a layer without cross-attention has no cross keys and values"):
        Block(cfg).cross_key_values(memory)


def test_encoder_decoder_paths_of_the_torch_worker_and_parity_agree():
    """The seq2seq branches now narrow the model with ``as_encoder_decoder``: same tokens both ways."""
    from edgeformer.benchmark.torch_worker import forward_fn, torch_generate
    from edgeformer.nn.models import build_model
    from edgeformer.parity import torch_greedy

    cfg = card_config("transformer-mini")
    model = build_model(cfg).eval()
    ids = np.array([[5, 6, 7], [8, 9, 10]], dtype=np.int64)
    with torch.no_grad():
        cross = forward_fn(model, "encoder-decoder", torch.from_numpy(ids))()
        tokens, times = torch_generate(model, "encoder-decoder", ids, 4, max(cfg.bos_token_id, 0))
    assert len(cross) == cfg.decoder_layers and tuple(cross[0][0].shape)[:3] == (2, cfg.n_heads, 3)
    assert tokens.shape == (2, 4) and len(times) == 4
    np.testing.assert_array_equal(tokens, torch_greedy(model, cfg, ids, 4))
    with pytest.raises(TypeError, match="got Linear"):
        forward_fn(nn.Linear(2, 2), "encoder-decoder", torch.from_numpy(ids))

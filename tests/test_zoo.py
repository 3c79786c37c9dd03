"""Listing the zoo: parameter counts from the config (equal to torch's), fast, and numbers as numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from edgeformer.nn.models import build_model
from edgeformer.zoo import card_names, parameter_count, resolve_card


def torch_count(cfg) -> int:
    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", card_names())
def test_parameter_count_from_config_equals_torch(name):
    cfg = resolve_card(name).config
    assert parameter_count(cfg) == torch_count(cfg)


@pytest.mark.parametrize(
    "changes",
    [
        {"family": "encoder", "head": "classification", "num_labels": 3, "pooling": "pooler"},
        {"family": "encoder", "head": "embedding", "pooling": "pooler", "type_vocab_size": 2},
        {"family": "encoder", "head": "lm", "lm_head_transform": True, "lm_head_bias": True, "embedding_norm": True},
        {"family": "decoder", "head": "lm", "tie_embeddings": False, "norm": "pre", "positions": "learned"},
        {"family": "encoder-decoder", "head": "lm", "share_positions": False, "positions": "learned"},
        {"family": "encoder-decoder", "head": "none", "position_offset": 2, "positions": "learned", "d_ff": 96},
    ],
)
def test_parameter_count_from_config_covers_every_head_and_option(changes):
    base = resolve_card("bert-mini").config.replace(n_layers=1, head="none")
    if changes["family"] == "encoder-decoder":
        changes = {"n_decoder_layers": 2, **changes}
    cfg = base.replace(**changes)
    assert parameter_count(cfg) == torch_count(cfg)


def test_models_lists_the_zoo_without_torch_in_under_a_second():
    """`edgeformer models --json` imports neither torch nor onnx, and its numbers are numbers."""
    code = (
        "import sys, time; t = time.perf_counter(); from edgeformer.cli import main\n"
        "try:\n    main(['models', '--json'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules)\n"
        "print('HEAVY', ','.join(heavy) or '-', time.perf_counter() - t, file=sys.stderr)\n"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    elapsed = time.perf_counter() - started
    heavy = done.stderr.split("HEAVY ")[1].split()
    assert heavy[0] == "-", f"imported {heavy[0]}"
    assert float(heavy[1]) < 1.0 and elapsed < 5.0  # the whole process, interpreter start included
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["transformer-base"]["layers"] == 6 and rows["transformer-base"]["decoder_layers"] == 6
    assert rows["bert-mini"]["decoder_layers"] is None
    for row in rows.values():
        for key in ("layers", "d_model", "heads", "parameters", "size_fp32_bytes"):
            assert type(row[key]) is int, (row["name"], key, row[key])

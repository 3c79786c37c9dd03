"""Checkpoints load without executing code and name what does not fit."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import card_config

from edgeformer.errors import CheckpointError
from edgeformer.nn import build_model
from edgeformer.nn.checkpoint import load_weights, read_state_dict, save_checkpoint, sha256_file


def test_safetensors_round_trip_keeps_tied_weights(tmp_path):
    model = build_model(card_config("gpt-mini")).eval()
    path = tmp_path / "w.safetensors"
    sha = save_checkpoint(model, path)
    assert sha == sha256_file(path) and len(sha) == 64
    again = build_model(card_config("gpt-mini")).eval()
    load_weights(again, path)
    ids = torch.randint(0, 1024, (1, 9))
    assert torch.equal(model(ids)["logits"], again(ids)["logits"])
    assert again.lm_head.weight is again.embeddings.tokens.weight
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_mismatch_names_tensor_and_shapes(tmp_path):
    path = tmp_path / "w.safetensors"
    save_checkpoint(build_model(card_config("gpt-mini")), path)
    wider = build_model(card_config("gpt-mini", d_ff=256))
    with pytest.raises(
        CheckpointError, match=r"decoder\.layers\.0\.ffn\.fc1\.weight: expected \(256, 128\), found \(512, 128\)"
    ):
        load_weights(wider, path)
    deeper = build_model(card_config("gpt-mini", n_layers=3))
    with pytest.raises(CheckpointError, match=r"missing tensors: decoder\.layers\.2\."):
        load_weights(deeper, path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/edgeformer-pwned",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = "/tmp/edgeformer-pwned"
    import os

    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "pytorch_model.bin"
    with open(path, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_plain_torch_pickle_of_tensors_loads(tmp_path):
    model = build_model(card_config("bert-mini"))
    path = tmp_path / "pytorch_model.bin"
    torch.save(model.state_dict(), path)
    again = build_model(card_config("bert-mini"))
    load_weights(again, path)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_state_dict(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")

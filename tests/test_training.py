from __future__ import annotations

import pytest
import torch
from conftest import card_config

from edgeformer.nn import build_model
from edgeformer.nn.models import lm_loss
from edgeformer.nn.training import TrainConfig, lr_multiplier, train


def test_training_lowers_the_loss_of_the_edge_decoder():
    cfg = card_config("gpt-mini", vocab_size=32, max_positions=32)
    model = build_model(cfg)
    # a learnable stream: a repeating pattern with noise-free structure
    stream = torch.arange(2000) % 7 + (torch.arange(2000) // 7) % 3

    def sample(gen, batch_size):
        starts = torch.randint(0, len(stream) - 33, (batch_size,), generator=gen)
        rows = torch.stack([stream[s : s + 33] for s in starts.tolist()])
        return {"x": rows[:, :-1], "y": rows[:, 1:]}

    def step(m, batch):
        return lm_loss(m(batch["x"])["logits"], batch["y"])

    result = train(model, sample, step, TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup_steps=5, seed=3))
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.5 * first
    assert not model.training


def test_training_is_reproducible_from_the_seed():
    cfg = card_config("gpt-mini", vocab_size=16, max_positions=16, n_layers=1)

    def run():
        torch.manual_seed(0)
        model = build_model(cfg)

        def sample(gen, b):
            return {"x": torch.randint(0, 16, (b, 9), generator=gen)}

        return train(
            model,
            sample,
            lambda m, b: lm_loss(m(b["x"][:, :-1])["logits"], b["x"][:, 1:]),
            TrainConfig(steps=5, batch_size=4, seed=11),
        ).losses

    assert run() == run()


def test_learning_rate_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, cfg) == pytest.approx(1.0)
    assert lr_multiplier(55, cfg) == pytest.approx(0.55)
    assert lr_multiplier(100, cfg) == pytest.approx(0.1)


def test_gradient_clipping_and_nan_detection():
    cfg = card_config("gpt-mini", vocab_size=16, max_positions=16, n_layers=1)
    model = build_model(cfg)

    def sample(gen, b):
        return {"x": torch.randint(0, 16, (b, 8), generator=gen)}

    def bad(m, batch):
        return m(batch["x"])["logits"].sum() * float("nan")

    with pytest.raises(FloatingPointError, match="learning rate"):
        train(model, sample, bad, TrainConfig(steps=2, batch_size=2))

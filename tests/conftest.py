import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from edgeformer.zoo import resolve_card  # noqa: E402

EDGE_CARDS = ["bert-mini", "gpt-mini", "transformer-mini", "local-mini", "sparse-mini"]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def card_config(name: str, **changes):
    cfg = resolve_card(name).config
    return cfg.replace(dropout=0.0, attention_dropout=0.0, **changes)

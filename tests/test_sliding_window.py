"""The sliding-window KV cache of local decoders (issue #23): the runtime keeps at most window - 1
positions per layer (plus each row's global tokens) and still generates, batched with left padding,
exactly the greedy tokens of the torch masked full pass (the reference), far past the window."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeformer import runtime
from edgeformer.nn.layers import attention_impl
from edgeformer.nn.models import window_cache
from edgeformer.parity import generation_parity
from edgeformer.runtime.manifest import TensorSpec
from edgeformer.runtime.window import SlidingWindow, sliding_window, trim

WINDOW = 4
NEW = 16  # tokens generated: 4x the window
ROWS = ([5, 17, 9], [3, 1, 4, 1, 5, 9, 2, 6, 5])  # lengths 3 and 9: the short row is left-padded by 6


@pytest.fixture(scope="module", params=[0, 2], ids=["local", "local-global"])
def local(request, local_decoder_bundle):
    """(torch model, loaded bundle, global tokens, export source) of a tiny local decoder, window 4."""
    source, bundle = local_decoder_bundle(request.param)
    return source.model.eval(), runtime.load(bundle, spinning=False), request.param, source


@torch.no_grad()
def _torch_greedy(model, row: list[int], steps: int) -> list[int]:
    """The reference: the masked dense full pass over the whole sequence at every step, no cache."""
    ids = torch.tensor([row])
    with attention_impl(model, "dense"):
        for _ in range(steps):
            nxt = model(ids)["logits"][0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, len(row) :].tolist()


def _recording(model) -> list[tuple[tuple[int, ...], int]]:
    """Wrap the bundle's runs: (shape of past_key_values.0.key, attention mask length) per call."""
    seen: list[tuple[tuple[int, ...], int]] = []
    run = model._run

    def recorded(graph, feeds):
        seen.append((feeds["past_key_values.0.key"].shape, feeds["attention_mask"].shape[1]))
        return run(graph, feeds)

    model._run = recorded
    return seen


def test_batched_greedy_tokens_equal_the_masked_reference_with_a_cache_of_the_window(local):
    torch_model, model, g, _ = local
    names = tuple(f"past_key_values.{i}.{p}" for i in (0, 1) for p in ("key", "value"))
    assert model.window == SlidingWindow(WINDOW, g, names)
    seen = _recording(model)
    tokens = model.generate([list(r) for r in ROWS], NEW, stop_tokens=())
    assert tokens == [_torch_greedy(torch_model, r, NEW) for r in ROWS]
    lengths = [shape[2] for shape, _ in seen]
    assert max(lengths) == g + WINDOW - 1 and lengths[-1] == g + WINDOW - 1  # never more; reached and held
    assert all(shape[0] == 2 and total == shape[2] + (9 if i == 0 else 1) for i, (shape, total) in enumerate(seen))


def test_stepwise_logits_through_the_window_equal_the_full_pass(local):
    _, model, _, _ = local
    rows = [list(range(1, 24)), [7, 8, 9]]  # 23 tokens: the cache is trimmed from the 4th step on
    stepwise, full = model.stepwise_logits(rows), model.logits(rows)
    np.testing.assert_allclose(stepwise[0], full[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(stepwise[1, -3:], full[1, -3:], atol=1e-4, rtol=0)  # padding's logits mean nothing


def test_sampling_streaming_and_stop_tokens_work_through_the_window(local):
    torch_model, model, _, _ = local
    rows = [list(r) for r in ROWS]
    whole = runtime.load(model.bundle.path, spinning=False)
    whole.__dict__["window"] = None  # the same bundle keeping its whole cache
    sampled = model.generate(rows, NEW, temperature=0.9, top_k=20, seed=3, stop_tokens=())
    assert sampled == whole.generate(rows, NEW, temperature=0.9, top_k=20, seed=3, stop_tokens=())
    reference = [_torch_greedy(torch_model, r, NEW) for r in ROWS]
    stop = reference[0][6]  # row 0 stops at its 7th token, leaving the batch (and its cache rows)
    expected = [ref[: ref.index(stop) + 1] if stop in ref else ref for ref in reference]
    steps = list(model.stream(rows, NEW, stop_tokens=[stop]))
    assert [[s.token for s in steps if s.row == r] for r in (0, 1)] == expected
    assert [s.last for s in steps if s.row == 0][-1] and len(expected[0]) <= 7


def test_the_manifest_says_which_layers_are_windowed(local, edge_bundle):
    _, model, g, _ = local
    raw = json.loads((model.bundle.path / "manifest.json").read_text("utf-8"))
    assert raw["graphs"]["model"]["sliding_window"] == {"window": WINDOW, "global_tokens": g, "layers": [0, 1]}
    gpt = runtime.load(edge_bundle("gpt-mini"), spinning=False)  # a global decoder: unchanged, whole cache
    assert gpt.window is None and "sliding_window" not in json.loads((gpt.bundle.path / "manifest.json").read_text())


def test_a_window_over_some_layers_only_keeps_the_whole_cache():
    """One attention mask serves every layer: a graph with a global layer is not trimmed at all."""
    shape = ("batch", 2, "past_sequence", 16)
    caches = [TensorSpec(f"past_key_values.{i}.{p}", "float32", shape) for i in (0, 1) for p in ("key", "value")]
    assert sliding_window({"window": 4, "layers": [0]}, caches) is None
    assert sliding_window(None, caches) is None
    assert sliding_window({"window": 4, "layers": [0, 1]}, caches) == SlidingWindow(4, 0, tuple(s.name for s in caches))


def test_trim_keeps_each_rows_global_tokens_in_front_of_the_last_positions():
    window = SlidingWindow(3, 2, ("past_key_values.0.key",))
    # row 0: 8 real positions; row 1: 3 pads then 5 real; the last mask column is the new token
    cache = np.arange(2 * 8, dtype=np.float32).reshape(2, 1, 8, 1)
    mask = np.array([[1] * 9, [0, 0, 0] + [1] * 6], dtype=np.int64)
    feeds = {"past_key_values.0.key": cache, "attention_mask": mask}
    trim(feeds, window)
    assert feeds["past_key_values.0.key"][:, 0, :, 0].tolist() == [[0, 1, 6, 7], [11, 12, 14, 15]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    # row 1's second global token (position 4) is still in the window: its slot is masked, not doubled
    cache = np.arange(2 * 6, dtype=np.float32).reshape(2, 1, 6, 1)
    mask = np.array([[1] * 7, [0, 0, 0, 1, 1, 1, 1]], dtype=np.int64)
    feeds = {"past_key_values.0.key": cache, "attention_mask": mask}
    trim(feeds, window)
    assert feeds["past_key_values.0.key"][1, 0, :, 0].tolist() == [9, 6, 10, 11]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 0, 1, 1, 1]]


@torch.no_grad()
def test_the_torch_decode_path_through_a_window_cache_equals_the_masked_full_pass(local):
    """Teacher forcing one token at a time, the cache cut by window_cache before each step: the logits
    of the real tokens equal one masked dense pass over the whole left-padded batch, far past the window."""
    torch_model, _, g, _ = local
    rows = [torch.arange(1, 24), torch.tensor([7, 8, 9, 10, 11])]
    ids = torch.zeros(2, 23, dtype=torch.long)
    mask = torch.zeros(2, 23, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, 23 - len(r) :], mask[i, 23 - len(r) :] = r, 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with attention_impl(torch_model, "dense"):
        full = torch_model(ids, mask)["logits"]  # (B, T, V)
        past, fed, steps = None, mask[:, :0], []
        for t in range(23):
            fed = torch.cat([fed, mask[:, t : t + 1]], dim=1)
            if past is not None:
                past, fed = window_cache(past, fed, torch_model.config)
                assert past[0][0].shape[2] <= g + WINDOW - 1 and fed.shape[1] == past[0][0].shape[2] + 1
            out = torch_model(ids[:, t : t + 1], fed, positions[:, t : t + 1], past)
            past = out["present_key_values"]
            steps.append(out["logits"][:, -1])
    stepwise = torch.stack(steps, dim=1)
    assert past[0][0].shape[2] == g + WINDOW  # the last step's cache: the window's slots and the new token
    torch.testing.assert_close(stepwise[0], full[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(stepwise[1, -5:], full[1, -5:], atol=1e-4, rtol=0)


def test_the_exports_generation_parity_runs_through_the_window(local):
    """`edgeformer export` judges a local decoder's greedy tokens as apps generate them: windowed."""
    _, model, g, source = local
    seen = []
    session = model.sessions["model"]

    class Recording:
        def get_outputs(self):
            return session.get_outputs()

        def get_inputs(self):
            return session.get_inputs()

        def run(self, names, feeds):
            seen.append(feeds["past_key_values.0.key"].shape[2])
            return session.run(names, feeds)

    report = generation_parity(source, {"model": Recording()}, steps=20)
    assert report["steps"] == 20 and report["identical"] and report["steps_agreeing"] == 20, report
    assert max(seen) == g + WINDOW - 1


def test_the_python_sample_keeps_the_window_too(local):
    """runtimes/python/run_bundle.py (onnxruntime + numpy only) trims one prompt's cache the same way."""
    import runpy
    from pathlib import Path

    _, model, g, _ = local
    sample = runpy.run_path(str(Path(__file__).parents[1] / "runtimes" / "python" / "run_bundle.py"))
    manifest = json.loads((model.bundle.path / "manifest.json").read_text("utf-8"))
    session, seen = model.sessions["model"], []

    class Recording:
        def get_outputs(self):
            return session.get_outputs()

        def run(self, names, feeds):
            seen.append(feeds["past_key_values.0.key"].shape[2])
            return session.run(names, feeds)

    tokens = sample["greedy_decoder"](Recording(), manifest, [5, 17, 9], NEW, -1)
    assert tokens == model.generate([5, 17, 9], NEW, stop_tokens=())
    assert max(seen) == seen[-1] == g + WINDOW - 1

"""One loaded runtime model shared by 8 threads: 1,000 calls give exactly the serial outputs.

The models keep no per-call state on ``self`` (batches, caches, random generators and text
decoders are local to each call) and onnxruntime's ``InferenceSession.run`` may be called from
several threads at once; this test holds them to it, mixing encoder ``encode``, decoder
``logits``, greedy and seeded sampled ``generate``, ``stream``, encoder-decoder ``generate`` and
text through a Hugging Face tokenizer.json, on models loaded fresh for the threads.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from props import with_word_tokenizer

from edgeformer import runtime

CALLS, THREADS, INPUTS = 1000, 8, 12


@pytest.fixture(scope="module")
def bundles(edge_bundle, tmp_path_factory):
    """The edge bundles, and gpt-mini with a Hugging Face tokenizer.json (text through the codec)
    when the optional tokenizers library is installed (transformers, a test dependency, brings it)."""
    out = {
        "encoder": edge_bundle("bert-mini"),
        "decoder": edge_bundle("gpt-mini"),
        "seq2seq": edge_bundle("transformer-mini"),
    }
    text = with_word_tokenizer(edge_bundle("gpt-mini"), tmp_path_factory.mktemp("hf") / "gpt-mini-words")
    if text is None:
        return out
    return {**out, "text": text}


def _load(bundles) -> dict[str, runtime.RuntimeModel]:
    return {name: runtime.load(path, spinning=False) for name, path in bundles.items()}


def _inputs(seed: int) -> list[list[int]]:
    """A ragged batch of 1-3 prompts (padded by the runtime), 1-12 tokens each."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1024, rng.integers(1, 13)).tolist() for _ in range(rng.integers(1, 4))]


def _calls(models) -> dict[str, object]:
    enc, dec, seq, text = models["encoder"], models["decoder"], models["seq2seq"], models.get("text")
    calls = {
        "encode": lambda x: enc.encode(x)["embeddings"],
        "logits": lambda x: dec.logits(x),
        "greedy": lambda x: dec.generate(x, 6, stop_tokens=()),
        "sampled": lambda x: dec.generate(x, 6, temperature=0.9, top_k=40, seed=len(x[0]), stop_tokens=()),
        "stream": lambda x: [(s.row, s.token) for s in dec.stream(x, 4, temperature=0.7, seed=3, stop_tokens=())],
        "seq2seq": lambda x: seq.generate(x, 5),
    }
    if text is not None:
        calls["text"] = lambda x: text.generate(" ".join(f"w{i % 1000}" for i in x[0]), 4, stop_tokens=())
    return calls


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    return a == b


def test_eight_threads_give_the_serial_outputs(bundles):
    inputs = [_inputs(seed) for seed in range(INPUTS)]
    serial = {(kind, i): fn(x) for kind, fn in _calls(_load(bundles)).items() for i, x in enumerate(inputs)}
    calls = _calls(_load(bundles))  # fresh models: their first calls (lazy tokenizer loading) race too
    rng = random.Random(0)
    jobs = [(rng.choice(list(calls)), rng.randrange(INPUTS)) for _ in range(CALLS)]

    def run(job: tuple[str, int]) -> object:
        kind, i = job
        return calls[kind](inputs[i])

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, jobs))  # an exception in any thread is raised here
    wrong = [job for job, got in zip(jobs, results, strict=True) if not _same(got, serial[job])]
    assert not wrong, f"{len(wrong)} of {CALLS} concurrent calls differ from the serial ones, e.g. {wrong[:3]}"
    assert {kind for kind, _ in jobs} == set(calls) and len(results) == CALLS

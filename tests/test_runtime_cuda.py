"""The runtime's GPU path, tested without a GPU: provider options, strict vs fallback when CUDA is
requested, IO binding (on the CPU provider, where binding is plain memory), fp16 KV caches.

What needs a GPU (parity and latency on CUDA) is bench/gpu_check.sh; the one test here that
would use CUDA skips with the reason when this onnxruntime has no CUDA provider.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeformer import runtime
from edgeformer.cli import main
from edgeformer.runtime import cuda, providers, session
from edgeformer.runtime.bundle import Spec
from edgeformer.runtime.generate import decoder_steps, empty_cache, greedy_decoder
from edgeformer.runtime.sampling import Sampling

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROMPTS = ["Return the", "class Foo:\n    ", "Create a new"]


@pytest.fixture(scope="module")
def decoder(edge_bundle):
    return runtime.load(edge_bundle("demo-decoder"), spinning=False)


# ----- provider options -----------------------------------------------------------------------------


def test_cuda_defaults_keep_fp32_parity():
    opts = cuda.provider_options(("cuda", "cpu"))
    assert opts == {CUDA: {"device_id": "0", "use_tf32": "0", "arena_extend_strategy": "kSameAsRequested"}, CPU: {}}
    half = cuda.provider_options(["cuda"], precision="fp16")[CUDA]
    assert half["enable_skip_layer_norm_strict_mode"] == "1" and half["use_tf32"] == "0"
    assert cuda.provider_options("tensorrt", precision="fp16") == {
        "TensorrtExecutionProvider": {"device_id": "0", "trt_fp16_enable": "1"}
    }
    assert cuda.provider_options(("tensorrt",))["TensorrtExecutionProvider"]["trt_fp16_enable"] == "0"
    assert cuda.provider_options(("xnnpack", "cpu")) == {"XnnpackExecutionProvider": {}, CPU: {}}


def test_given_options_update_the_defaults_as_text():
    given = {"cuda": {"device_id": 1, "use_tf32": True, "gpu_mem_limit": 2**30, "enable_cuda_graph": False}}
    opts = cuda.provider_options(("cuda", "cpu"), given)[CUDA]
    assert opts == {
        "device_id": "1",
        "use_tf32": "1",
        "gpu_mem_limit": "1073741824",
        "enable_cuda_graph": "0",
        "arena_extend_strategy": "kSameAsRequested",
    }
    full = cuda.provider_options([CUDA], {CUDA: {"cudnn_conv_algo_search": "HEURISTIC"}})[CUDA]
    assert full["cudnn_conv_algo_search"] == "HEURISTIC"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cuda": {"use_tf33": 1}}, "unknown CUDA provider option 'use_tf33'; known: arena_extend_strategy"),
        ({"cuda": {"device_id": -1}}, "device_id must be an integer >= 0, got -1"),
        ({"cuda": {"device_id": "gpu0"}}, "device_id must be an integer >= 0"),
        ({"cuda": {"gpu_mem_limit": None}}, "give a bool, a number or a non-empty string"),
        ({"tensorrt": {"trt_fp16_enable": 1}}, "options given for provider 'tensorrt', which is not requested"),
        ({"cuda": ["device_id", 0]}, "must be a mapping"),
        ({"cdua": {}}, "unknown execution provider 'cdua'"),
    ],
)
def test_bad_options_are_refused_before_any_gpu_is_touched(decoder, given, message):
    with pytest.raises((runtime.OptionError, runtime.ProviderError)) as err:
        runtime.load(decoder.bundle.path, providers=("cuda", "cpu"), provider_options=given)
    assert message in str(err.value)


# ----- CUDA requested: absent, failing, silently not started --------------------------------------


def test_cuda_absent_is_a_clear_error_in_strict_mode_and_a_recorded_fallback_otherwise(decoder):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: the absent case cannot be shown here")
    with pytest.raises(runtime.ProviderError) as err:
        runtime.load(decoder.bundle.path, providers=("cuda",), strict=True, provider_options={"cuda": {"device_id": 0}})
    text = str(err.value)
    assert "'cuda' (CUDAExecutionProvider) is not in this onnxruntime" in text and "pip install onnxruntime-gpu" in text
    assert "installed: " in text and "(strict: no fallback)" in text
    model = runtime.load(decoder.bundle.path, providers=("cuda", "cpu"))
    assert model.provider == "cpu" and model.provider_outcomes == {"cuda": "not installed", "cpu": "used"}


def test_check_runs_on_the_provider_asked_for_or_says_why_not(edge_bundle):
    bundle = str(edge_bundle("bert-mini"))
    result = CliRunner().invoke(main, ["check", bundle, "--provider", "cdua"])
    assert result.exit_code == 1 and "unknown execution provider 'cdua'" in result.output
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: bench/gpu_check.sh checks parity on it")
    result = CliRunner().invoke(main, ["check", bundle, "--provider", "cuda"])
    assert result.exit_code == 1
    assert "'cuda' (CUDAExecutionProvider) is not in this onnxruntime" in result.output
    assert "onnxruntime-gpu" in result.output and "Traceback" not in result.output


class _FakeCudaSessions:
    """Stands in for onnxruntime.InferenceSession as if the CUDA provider were installed: records
    what each session was asked for; ``mode`` "fails" raises as onnxruntime does without a GPU,
    "falls back" opens a CPU session (what onnxruntime does when the CUDA libraries do not load)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls: list[tuple[list[str], list[dict]]] = []

    def __call__(self, source, opts=None, providers=None, provider_options=None):  # noqa: ANN001
        self.calls.append((list(providers), [dict(o) for o in provider_options]))
        if providers[0] == CUDA and self.mode == "fails":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected ; GPU=0\nmore lines")
        return _REAL_SESSION(source, opts, providers=[CPU])


_REAL_SESSION = ort.InferenceSession


@pytest.fixture
def cuda_installed(monkeypatch):
    monkeypatch.setattr(providers, "installed", lambda: [CUDA, CPU])
    monkeypatch.setattr(session, "installed", lambda: [CUDA, CPU])

    def install(mode: str) -> _FakeCudaSessions:
        fake = _FakeCudaSessions(mode)
        monkeypatch.setattr(session.ort, "InferenceSession", fake)
        return fake

    return install


def test_cuda_that_fails_to_start_falls_back_or_is_an_error(decoder, cuda_installed):
    fake = cuda_installed("fails")
    model = runtime.load(decoder.bundle.path, providers=("cuda", "cpu"), provider_options={"cuda": {"device_id": 0}})
    assert model.provider == "cpu"
    assert model.provider_outcomes == {
        "cuda": "failed: CUDA failure 100: no CUDA-capable device is detected ; GPU=0",
        "cpu": "used",
    }
    first_providers, first_options = fake.calls[0]
    assert first_providers == [CUDA, CPU]
    assert first_options == [{"device_id": "0", "use_tf32": "0", "arena_extend_strategy": "kSameAsRequested"}, {}]
    assert fake.calls[1] == ([CPU], [{}])
    assert model.generate("Return the", 8) == decoder.generate("Return the", 8)
    with pytest.raises(runtime.ProviderError, match="could not open model.onnx on cuda: CUDA failure 100"):
        runtime.load(decoder.bundle.path, providers=("cuda",), strict=True)


def test_cuda_that_silently_did_not_start_is_named(decoder, cuda_installed):
    cuda_installed("falls back")
    model = runtime.load(decoder.bundle.path, providers=("cuda", "cpu"))
    assert model.provider == "cpu" and model.provider_outcomes == {"cuda": "did not start", "cpu": "used"}
    with pytest.raises(runtime.ProviderError, match="'cuda' is installed but did not start .* fell back to cpu"):
        runtime.load(decoder.bundle.path, providers=("cuda", "cpu"), strict=True)


def test_parity_sessions_get_the_cuda_options(edge_bundle, cuda_installed):
    fake = cuda_installed("falls back")
    with pytest.raises(runtime.ProviderError, match="did not start"):  # strict, as `edgeformer check` runs
        session.make_session(edge_bundle("bert-mini") / "model.onnx", ("cuda",), precision="fp16")
    assert fake.calls[0] == (
        [CUDA],
        [
            {
                "device_id": "0",
                "use_tf32": "0",
                "arena_extend_strategy": "kSameAsRequested",
                "enable_skip_layer_norm_strict_mode": "1",
            }
        ],
    )


@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a GPU")
def test_cuda_generates_the_cpu_tokens_with_io_binding(decoder):
    gpu = runtime.load(decoder.bundle.path, providers=("cuda",), strict=True, io_binding=True)
    assert gpu.provider == "cuda" and gpu.sessions["model"].device == "cuda"
    assert gpu.generate(PROMPTS, 32, stop_tokens=()) == decoder.generate(PROMPTS, 32, stop_tokens=())


# ----- IO binding, on the CPU provider -----------------------------------------------------------------


def test_io_binding_generates_the_same_tokens_and_keeps_the_cache_bound(decoder, monkeypatch):
    bound = runtime.load(decoder.bundle.path, spinning=False, io_binding=True)
    assert isinstance(bound.sessions["model"], cuda.BoundSession) and bound.sessions["model"].device == "cpu"
    assert bound.provider == "cpu"
    assert bound.generate(PROMPTS, 24, stop_tokens=()) == decoder.generate(PROMPTS, 24, stop_tokens=())
    ids = [[257, 82, 101, 116], [257, 65]]
    stop = decoder.generate(ids, 24, stop_tokens=())[0][3]  # rows stop at different steps: cache rows are dropped
    assert bound.generate(ids, 24, stop_tokens=[stop]) == decoder.generate(ids, 24, stop_tokens=[stop])
    sampled = dict(temperature=0.9, top_k=20, seed=3)
    assert bound.generate(PROMPTS, 16, **sampled) == decoder.generate(PROMPTS, 16, **sampled)
    np.testing.assert_array_equal(bound.logits(PROMPTS), decoder.logits(PROMPTS))

    copies = []
    real = ort.OrtValue.ortvalue_from_numpy
    monkeypatch.setattr(
        cuda.ort.OrtValue, "ortvalue_from_numpy", staticmethod(lambda a, *r: copies.append(a.shape) or real(a, *r))
    )
    bound.generate("Return the", 20, stop_tokens=())
    n_cache = sum(s.name.startswith("past_key_values.") for s in bound.graph("model").inputs)
    assert n_cache == 8 and len(copies) == 20 * 3 + n_cache  # ids, mask, positions per step; the cache once (empty)


def test_io_binding_outputs_and_the_parity_loop(decoder):
    bound = cuda.BoundSession(decoder.sessions["model"])
    prompt = np.array([[257, 82, 101, 116], [257, 99, 108, 97]], dtype=np.int64)
    want = greedy_decoder(decoder.sessions["model"], prompt, 16)
    np.testing.assert_array_equal(greedy_decoder(bound, prompt, 16), want)
    names = [o.name for o in bound.get_outputs()]
    feeds = {
        "input_ids": prompt,
        "attention_mask": np.ones_like(prompt),
        "position_ids": np.arange(4)[None].repeat(2, 0),
    }
    feeds.update(empty_cache(decoder.graph("model").inputs, 2))
    outs = dict(zip(names, bound.run(names, feeds), strict=True))
    key = outs["present.0.key"]
    assert isinstance(outs["logits"], np.ndarray) and isinstance(key, cuda.DeviceArray)
    assert key.shape == (2, 8, 4, 24) and key.ndim == 4 and key.dtype == np.float32 and key.device == "cpu"
    plain = dict(zip(names, decoder.sessions["model"].run(names, feeds), strict=True))
    np.testing.assert_array_equal(np.asarray(key), plain["present.0.key"])
    np.testing.assert_array_equal(key[1:], plain["present.0.key"][1:])
    assert "DeviceArray(shape=(2, 8, 4, 24)" in repr(key)


def test_io_binding_encoders_and_seq2seq(edge_bundle):
    for card, call in (
        ("transformer-mini", lambda m: m.generate([[5, 6, 7, 8], [9, 10]], 12, stop_tokens=())),
        ("demo-encoder", lambda m: m.encode(["Return the absolute value.", "A class."])["logits"]),
    ):
        plain = runtime.load(edge_bundle(card), spinning=False)
        bound = runtime.load(edge_bundle(card), spinning=False, io_binding=True)
        np.testing.assert_array_equal(np.asarray(call(bound)), np.asarray(call(plain)))


# ----- fp16 caches ------------------------------------------------------------------------------------


def _fp16_decoder(vocab: int = 6) -> bytes:
    """A one-layer stand-in for an fp16 decoder: the next token is (token + 1) % vocab, and the KV
    cache (float16) grows by the embedding of each new token, as a real decoder's does."""
    step = np.zeros((vocab, vocab), dtype=np.float16)
    step[np.arange(vocab), (np.arange(vocab) + 1) % vocab] = 1.0
    embed = np.arange(vocab * 2, dtype=np.float16).reshape(vocab, 2)
    nodes = [
        helper.make_node("Gather", ["step", "input_ids"], ["logits"]),  # (B, T, V) float16
        helper.make_node("Gather", ["embed", "input_ids"], ["emb"]),  # (B, T, 2)
        helper.make_node("Unsqueeze", ["emb", "one"], ["kv"]),  # (B, 1, T, 2)
        helper.make_node("Concat", ["past_key_values.0.key", "kv"], ["present.0.key"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "kv"], ["present.0.value"], axis=2),
        helper.make_node("Identity", ["attention_mask"], ["unused_mask"]),
        helper.make_node("Identity", ["position_ids"], ["unused_positions"]),
    ]
    cache = ["batch", 1, "past_sequence", 2]
    present = ["batch", 1, "total_sequence", 2]
    graph = helper.make_graph(
        nodes,
        "fp16_decoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT16, cache),
            helper.make_tensor_value_info("past_key_values.0.value", TensorProto.FLOAT16, cache),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["batch", "sequence", vocab]),
            helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT16, present),
            helper.make_tensor_value_info("present.0.value", TensorProto.FLOAT16, present),
            helper.make_tensor_value_info("unused_mask", TensorProto.INT64, ["batch", "total_sequence"]),
            helper.make_tensor_value_info("unused_positions", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [
            numpy_helper.from_array(step, "step"),
            numpy_helper.from_array(embed, "embed"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_fp16_graphs_get_an_fp16_cache_through_the_loops():
    specs = (
        Spec("input_ids", "int64", ("batch", "sequence")),
        Spec("past_key_values.0.key", "float16", ("batch", 1, "past_sequence", 2)),
        Spec("past_key_values.0.value", "float16", ("batch", 1, "past_sequence", 2)),
        Spec("past_key_values.0.encoder.key", "float16", ("batch", 1, "encoder_sequence", 2)),
    )
    cache = empty_cache(specs, 3)
    assert set(cache) == {"past_key_values.0.key", "past_key_values.0.value"}
    assert all(v.dtype == np.float16 and v.shape == (3, 1, 0, 2) for v in cache.values())
    assert cuda.cache_dtype("float16") == np.float16
    with pytest.raises(runtime.OptionError, match="unknown cache dtype 'bfloat17'"):
        cuda.cache_dtype("bfloat17")

    sess = ort.InferenceSession(_fp16_decoder(), providers=[CPU])
    assert cuda.input_dtype(sess.get_inputs()[3]) == np.float16
    prompt = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    want = np.array([[3, 4, 5, 0, 1], [0, 1, 2, 3, 4]])
    for runner in (sess, cuda.BoundSession(sess)):  # the parity loop builds its cache from the session's inputs
        np.testing.assert_array_equal(greedy_decoder(runner, prompt, 5), want)

    names = [o.name for o in sess.get_outputs()]
    mask = np.ones_like(prompt)
    for runner in (sess, cuda.BoundSession(sess)):
        seen = []

        def run(feeds, runner=runner, seen=seen):  # noqa: ANN001
            seen.append({k: (np.asarray(v).dtype, np.asarray(v).shape) for k, v in feeds.items() if "past" in k})
            return dict(zip(names, runner.run(names, feeds), strict=True))

        tokens = list(decoder_steps(run, specs[:3], prompt, mask, 5, Sampling(), stop=()))
        assert [t for _, t, _ in tokens] == want.T.ravel().tolist()
        assert seen[0]["past_key_values.0.key"] == (np.float16, (2, 1, 0, 2))
        assert seen[-1]["past_key_values.0.key"] == (np.float16, (2, 1, 6, 2))  # prompt 3 + 3 tokens fed back

"""The device runtime (edgeformer.runtime) against the torch source, on bundles exported here.

Numbers first: greedy tokens identical to torch, encoder outputs within 1e-4; then behaviour:
left-padded batches, sampling, stop tokens, streaming, providers, validation, bundle checks, and
that the runtime and the Python sample run with torch and onnx blocked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeformer import runtime, tokenizer
from edgeformer.errors import EdgeformerError
from edgeformer.nn.checkpoint import load_model
from edgeformer.parity import torch_greedy
from edgeformer.runtime.bundle import stamp_manifest
from edgeformer.runtime.generate import greedy_decoder, greedy_seq2seq
from edgeformer.zoo import resolve_card

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "runtimes" / "python" / "run_bundle.py"
BLOCK = "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
PROMPTS = ["Return the", "class Foo:\n    ", "Create a new"]


@pytest.fixture(scope="module")
def bundles(edge_bundle):
    """Bundles exported once per test session, on demand (conftest's edge_bundle): card name -> directory."""
    return edge_bundle


@pytest.fixture(scope="module")
def decoder(bundles):
    return runtime.load(bundles("demo-decoder"), spinning=False)


def _torch_model(card: str):
    return load_model(resolve_card(card))


def _ids(texts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(t, bos=True) for t in texts]


# ----- numbers: the runtime computes what torch computes ------------------------------------------


def test_decoder_greedy_matches_torch_and_the_greedy_loop(decoder):
    prompt = np.array(_ids(["Return the", "class Foo:"]), dtype=np.int64)  # equal lengths: no padding
    want = torch_greedy(_torch_model("demo-decoder"), resolve_card("demo-decoder").config, prompt, 32)
    got = decoder.generate(prompt, 32, stop_tokens=())
    assert np.array_equal(np.array(got), want)
    assert np.array_equal(np.array(got), greedy_decoder(decoder.sessions["model"], prompt, 32))


def test_random_decoder_greedy_matches_torch(bundles):
    model = runtime.load(bundles("gpt-mini"), spinning=False)
    prompt = np.random.default_rng(0).integers(0, 1024, (2, 6), dtype=np.int64)
    want = torch_greedy(_torch_model("gpt-mini"), resolve_card("gpt-mini").config, prompt, 20)
    assert np.array_equal(np.array(model.generate(prompt, 20)), want)  # gpt-mini has no eos


def test_seq2seq_greedy_matches_torch_and_the_greedy_loop(bundles):
    model = runtime.load(bundles("transformer-mini"), spinning=False)
    assert isinstance(model, runtime.Seq2SeqModel) and model.start_token == 1
    source = np.random.default_rng(1).integers(3, 1024, (2, 9), dtype=np.int64)
    want = torch_greedy(_torch_model("transformer-mini"), resolve_card("transformer-mini").config, source, 16)
    got = np.array(model.generate(source, 16, stop_tokens=()))
    assert np.array_equal(got, want)
    sessions = model.sessions
    assert np.array_equal(got, greedy_seq2seq(sessions["encoder"], sessions["decoder"], source, 1, 16))


def test_encode_matches_torch_with_right_padding(bundles):
    model = runtime.load(bundles("bert-mini"), spinning=False)
    rows = [[5, 17, 42, 7, 300, 1000, 2], [9, 8, 7]]
    out = model.encode(rows)
    assert set(out) == {"last_hidden_state", "embeddings"}
    ids = torch.tensor([rows[0], rows[1] + [0] * 4])
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    with torch.no_grad():
        want = _torch_model("bert-mini")(ids, mask)
    np.testing.assert_allclose(out["embeddings"], want["embeddings"].numpy(), atol=1e-4, rtol=0)
    real = mask.numpy().astype(bool)  # padded positions are not compared
    np.testing.assert_allclose(out["last_hidden_state"][real], want["last_hidden_state"].numpy()[real], atol=1e-4)
    np.testing.assert_allclose(model.encode(rows[1])["embeddings"][0], out["embeddings"][1], atol=1e-4)


def test_text_encoder_logits_match_torch(bundles):
    model = runtime.load(bundles("demo-encoder"), spinning=False)
    texts = ["Return the absolute value of x.", "A class of things."]
    logits = model.logits(texts)  # (B, labels)
    assert logits.shape == (2, 3)
    rows = [tokenizer.encode(t) for t in texts]  # trained without begin-of-text
    ids = torch.full((2, len(rows[0])), tokenizer.PAD)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        want = _torch_model("demo-encoder")(ids, mask)["logits"].numpy()
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.logits(texts[0].encode()), logits[:1], atol=1e-5)  # bytes are text too


# ----- batches, sampling, stop tokens, streaming ----------------------------------------------------


def test_left_padded_batch_gives_each_prompt_its_own_tokens(decoder):
    batch = decoder.generate(PROMPTS, 24, stop_tokens=())
    alone = [decoder.generate(p, 24, stop_tokens=()) for p in PROMPTS]
    assert batch == alone and all(isinstance(t, str) and t for t in batch)
    ids = _ids(PROMPTS)
    assert decoder.generate(ids, 24, stop_tokens=()) == [decoder.generate(r, 24, stop_tokens=()) for r in ids]
    logits = decoder.logits(ids)  # (B, T, V), left-padded
    for i, row in enumerate(ids):
        np.testing.assert_allclose(logits[i, -len(row) :], decoder.logits(row)[0], atol=1e-4, rtol=0)


def test_stepwise_logits_equal_the_whole_sequence_pass(decoder):
    """One token per call through the KV cache (as generate runs) gives the prefill's logits."""
    ids = _ids(PROMPTS)
    stepwise, whole = decoder.stepwise_logits(ids), decoder.logits(ids)  # left-padded batch
    assert stepwise.shape == whole.shape
    for i, row in enumerate(ids):  # the real tokens' positions (padding's logits mean nothing)
        np.testing.assert_allclose(stepwise[i, -len(row) :], whole[i, -len(row) :], atol=1e-4, rtol=0)
    np.testing.assert_allclose(decoder.stepwise_logits(PROMPTS[0]), decoder.logits(PROMPTS[0]), atol=1e-4, rtol=0)
    with pytest.raises(runtime.SequenceTooLongError):
        decoder.stepwise_logits([1] * 129)


def test_random_decoder_left_padding_matches_alone(bundles):
    model = runtime.load(bundles("gpt-mini"), spinning=False)
    rng = np.random.default_rng(2)
    rows = [rng.integers(0, 1024, n).tolist() for n in (3, 11, 6)]
    assert model.generate(rows, 12) == [model.generate(r, 12) for r in rows]


def test_sampling_is_seeded_and_top_k_1_is_greedy(decoder):
    greedy = decoder.generate(PROMPTS, 24, stop_tokens=())
    first = decoder.generate(PROMPTS, 24, temperature=1.0, seed=7, stop_tokens=())
    assert decoder.generate(PROMPTS, 24, temperature=1.0, seed=7, stop_tokens=()) == first
    others = [decoder.generate(PROMPTS, 24, temperature=1.0, seed=s, stop_tokens=()) for s in (1, 2)]
    assert any(o != first for o in others) and first != greedy
    assert decoder.generate(PROMPTS, 24, temperature=0.8, top_k=1, seed=3, stop_tokens=()) == greedy
    assert decoder.generate(PROMPTS, 24, temperature=1.5, top_p=1e-6, seed=3, stop_tokens=()) == greedy
    topk = decoder.generate(_ids(PROMPTS), 24, temperature=1.0, top_k=5, top_p=0.9, seed=4, stop_tokens=())
    logits = decoder.logits(_ids(PROMPTS)[0])[0, -1]
    assert topk[0][0] in np.argsort(-logits)[:5]


def test_stop_tokens_stop_each_row(decoder):
    ids = _ids(PROMPTS)
    full = decoder.generate(ids, 24, stop_tokens=())
    stop = full[0][5]  # a token the first prompt produces at step 5
    got = decoder.generate(ids, 24, stop_tokens=[stop])
    for row, tokens in zip(full, got, strict=True):
        cut = row.index(stop) + 1 if stop in row else len(row)
        assert tokens == row[:cut]
    assert len(got[0]) <= 6 and got[0][-1] == stop and any(len(t) > len(got[0]) for t in got)
    assert decoder.generate(ids[0], 24, stop_tokens=stop) == got[0]
    default = decoder.generate(ids, 60)  # stops at the config's eos (258) when it comes
    for row in default:
        assert tokenizer.EOS not in row[:-1] and (row[-1] == tokenizer.EOS or len(row) == 60)


def test_streaming_yields_the_tokens_of_generate(decoder):
    want = decoder.generate(PROMPTS, 20, stop_tokens=())
    steps = list(decoder.stream(PROMPTS, 20, stop_tokens=()))
    per_row: list[list[int]] = [[], [], []]
    for step in steps:
        assert step.index == len(per_row[step.row])
        per_row[step.row].append(step.token)
    assert [tokenizer.decode(t) for t in per_row] == want
    assert ["".join(s.text for s in steps if s.row == r) for r in range(3)] == want
    assert [s.last for s in steps].count(True) == 3
    seen: list = []
    assert decoder.generate(PROMPTS, 20, stop_tokens=(), callback=seen.append) == want
    assert seen == steps
    sampled = decoder.generate(PROMPTS[0], 16, temperature=0.9, seed=5)
    assert "".join(s.text for s in decoder.stream(PROMPTS[0], 16, temperature=0.9, seed=5)) == sampled
    first = next(iter(decoder.stream("Return", 8)))  # tokens come one at a time
    assert first.index == 0 and first.row == 0


def test_seq2seq_streaming_and_stop(bundles):
    model = runtime.load(bundles("transformer-mini"), spinning=False)
    sources = [[5, 6, 7, 8, 9], [10, 11, 12]]  # right-padded
    full = model.generate(sources, 10, stop_tokens=())
    assert full == [model.generate(s, 10, stop_tokens=()) for s in sources]
    streamed: list[list[int]] = [[], []]
    for step in model.stream(sources, 10, stop_tokens=()):
        streamed[step.row].append(step.token)
    assert streamed == full
    stop = full[1][3]
    assert model.generate(sources[1], 10, stop_tokens=[stop]) == full[1][: full[1].index(stop) + 1]
    assert model.generate(sources, 10, temperature=1.0, top_k=1, seed=0, stop_tokens=()) == full


# ----- providers and session options ------------------------------------------------------------


def test_provider_fallback_records_what_was_tried(bundles):
    model = runtime.load(bundles("demo-decoder"), providers=("cuda", "tensorrt", "cpu"))
    assert model.providers_tried == ["cuda", "tensorrt", "cpu"]
    assert model.provider_outcomes == {"cuda": "not installed", "tensorrt": "not installed", "cpu": "used"}
    assert model.provider == "cpu" and model.providers == ["cpu"]
    only_missing = runtime.load(bundles("demo-decoder"), providers="coreml")
    assert only_missing.provider == "cpu" and only_missing.provider_outcomes["coreml"] == "not installed"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("cuda", "onnxruntime-gpu"),
        ("tensorrt", "onnxruntime-gpu"),
        ("qnn", "onnxruntime-qnn"),
        ("directml", "onnxruntime-directml"),
        ("nnapi", "--use_nnapi / Android package onnxruntime-android"),
        ("coreml", "--use_coreml"),
        ("xnnpack", "--use_xnnpack"),
        ("webgpu", "--use_webgpu"),
    ],
)
def test_strict_mode_names_installed_providers_and_the_package(bundles, name, hint):
    with pytest.raises(runtime.ProviderError) as err:
        runtime.load(bundles("demo-decoder"), providers=(name, "cpu"), strict=True)
    text = str(err.value)
    assert hint in text and f"{name!r}" in text and "installed: " in text and "cpu" in text.split("installed: ")[1]
    assert isinstance(err.value, runtime.RuntimeBundleError) and isinstance(err.value, RuntimeError)


def test_unknown_provider_is_refused(bundles):
    with pytest.raises(runtime.ProviderError, match="unknown execution provider 'cdua'; short names: cpu, cuda"):
        runtime.load(bundles("demo-decoder"), providers=("cdua", "cpu"))
    strict = runtime.load(bundles("demo-decoder"), providers=("cpu",), strict=True)
    assert strict.provider_outcomes == {"cpu": "used"}


def test_session_options_are_applied(bundles, tmp_path):
    saved = tmp_path / "opt" / "demo.onnx"
    model = runtime.load(
        bundles("demo-decoder"),
        threads=1,
        spinning=False,
        optimization="basic",
        optimized_model_path=saved,
        memory_arena=False,
    )
    opts = model.sessions["model"].get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.enable_cpu_mem_arena is False
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert str(opts.graph_optimization_level).endswith("ORT_ENABLE_BASIC")
    assert saved.is_file() and saved.stat().st_size > 0
    seq = runtime.load(bundles("transformer-mini"), optimized_model_path=tmp_path / "dir")
    assert {p.name for p in (tmp_path / "dir").iterdir()} == {"encoder.optimized.onnx", "decoder.optimized.onnx"}
    assert seq.sessions["encoder"].get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning"
    ) == ("1")
    with pytest.raises(runtime.OptionError, match="optimization must be one of disable, basic, extended, all"):
        runtime.load(bundles("demo-decoder"), optimization="max")
    with pytest.raises(runtime.OptionError, match="threads must be None .one per core. or an integer from 1 to"):
        runtime.load(bundles("demo-decoder"), threads=0)


# ----- input validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m.generate(np.array([[1.0, 2.0]]), 4), runtime.InputDtypeError, "integer array"),
        (lambda m: m.generate([[1, 2], [3.5]], 4), runtime.InputDtypeError, "integer token ids"),
        (lambda m: m.logits(np.zeros((1, 2, 3), dtype=np.int64)), runtime.InputShapeError, "got shape (1, 2, 3)"),
        (lambda m: m.generate("x" * 100, 32), runtime.SequenceTooLongError, "at most 96"),
        (lambda m: m.logits([1] * 129), runtime.SequenceTooLongError, "at most 128"),
        (lambda m: m.generate("", 4), runtime.EmptyInputError, "the text is empty"),
        (lambda m: m.generate([], 4), runtime.EmptyInputError, "is empty"),
        (lambda m: m.generate([[1, 2], []], 4), runtime.EmptyInputError, "input_ids[1] is empty"),
        (lambda m: m.generate([1, 2, 259], 4), runtime.TokenRangeError, "input_ids[0][2] = 259 is outside"),
        (lambda m: m.generate([[5, -1]], 4), runtime.TokenRangeError, "= -1 is outside the vocabulary [0, 259)"),
        (lambda m: m.generate(b"caf\xe9", 4), runtime.TextEncodingError, "not valid UTF-8 (byte 0xe9 at offset 3)"),
        (lambda m: m.generate([b"ok", b"\xff"], 4), runtime.TextEncodingError, "not valid UTF-8"),
        (lambda m: m.generate(["a", [1, 2]], 4), runtime.InputDtypeError, "mixes text and token ids"),
        (lambda m: m.logits([1, 2, 3], attention_mask=[1, 1]), runtime.InputShapeError, "must match input_ids"),
        (lambda m: m.logits([1, 2], attention_mask=[1, 2]), runtime.InputError, "only 0 (padding) and 1"),
        (lambda m: m.generate("hi", 0), runtime.OptionError, "max_new_tokens must be a positive integer"),
        (
            lambda m: m.generate("hi", 4, temperature=-1),
            runtime.OptionError,
            "temperature must be a finite number >= 0",
        ),
        (lambda m: m.generate("hi", 4, top_p=0), runtime.OptionError, "top_p must be in (0, 1]"),
        (lambda m: m.generate("hi", 4, top_k=-2), runtime.OptionError, "top_k must be an integer >= 0"),
        (lambda m: m.run({"input_ids": np.zeros((1, 2), np.int32)}), runtime.InputDtypeError, "must be int64"),
        (lambda m: m.run({"input_ids": np.zeros(2, np.int64)}), runtime.InputShapeError, "must have rank 2"),
        (lambda m: m.run({"input_ids": np.zeros((1, 2), np.int64)}), runtime.InputError, "needs input 'attention"),
    ],
)
def test_decoder_input_errors(decoder, call, error, message):
    with pytest.raises(error) as err:
        call(decoder)
    assert message in str(err.value)
    assert isinstance(err.value, runtime.RuntimeBundleError) and isinstance(err.value, EdgeformerError)


def test_errors_are_raised_before_streaming_starts(decoder):
    with pytest.raises(runtime.SequenceTooLongError, match="shorten the prompt or lower max_new_tokens"):
        decoder.stream("x" * 120, 16)  # not a lazy generator: checked at the call


def test_text_needs_a_tokenizer(bundles):
    model = runtime.load(bundles("bert-mini"), spinning=False)
    with pytest.raises(runtime.NoTokenizerError, match="has no tokenizer"):
        model.encode("some text")
    with pytest.raises(runtime.TokenRangeError, match="outside the vocabulary \\[0, 1024\\)"):
        model.encode([[1, 2, 1024]])
    with pytest.raises(runtime.InputError, match="has no logits output \\(head 'embedding'\\)"):
        model.logits([1, 2, 3])


# ----- the bundle: manifest, hashes, paths ------------------------------------------------------


def _copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def _edit_manifest(bundle: Path, change) -> None:  # noqa: ANN001
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(bundle)  # the digest follows the edit


def test_bundle_files_are_checked(bundles, tmp_path):
    bad = _copy(bundles("gpt-mini"), tmp_path / "corrupt")
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(runtime.BundleIntegrityError, match="model.onnx does not match its sha256"):
        runtime.load(bad)

    for name in ("../model.onnx", "/etc/passwd", "..\\x.onnx", "C:/x.onnx"):
        escape = _copy(bundles("gpt-mini"), tmp_path / f"escape{len(list(tmp_path.iterdir()))}")
        _edit_manifest(escape, lambda m, n=name: m["files"].update({n: "0" * 64}))
        with pytest.raises(runtime.BundleIntegrityError, match="points outside the bundle"):
            runtime.load(escape)

    graph = _copy(bundles("gpt-mini"), tmp_path / "graph-escape")
    _edit_manifest(graph, lambda m: m["graphs"]["model"].update({"file": "../gpt-mini/model.onnx"}))
    with pytest.raises(runtime.BundleIntegrityError, match="points outside the bundle"):
        runtime.load(graph)

    old = _copy(bundles("gpt-mini"), tmp_path / "old")
    _edit_manifest(old, lambda m: m.update({"format_version": 2}))
    with pytest.raises(runtime.BundleFormatError, match="format_version 2 is not 1"):
        runtime.load(old)

    with pytest.raises(runtime.BundleFormatError, match="has no manifest.json"):
        runtime.load(tmp_path)
    with pytest.raises(runtime.BundleFormatError, match="is not a bundle directory"):
        runtime.load(tmp_path / "nowhere")

    missing = _copy(bundles("gpt-mini"), tmp_path / "missing")
    (missing / "model.onnx").unlink()
    with pytest.raises(runtime.BundleIntegrityError, match="model.onnx is missing"):
        runtime.load(missing)


def test_model_knows_its_bundle(decoder, bundles):
    assert isinstance(decoder, runtime.DecoderModel)
    assert decoder.name == "demo-decoder" and decoder.family == "decoder" and decoder.tokenizer == "bytes"
    assert decoder.bundle.path == bundles("demo-decoder") and decoder.max_positions == 128
    assert decoder.config["eos_token_id"] == 258 and "demo-decoder" in repr(decoder)
    assert isinstance(runtime.load(bundles("demo-encoder")), runtime.EncoderModel)


# ----- torch-free: the runtime and the sample ------------------------------------------------------


def _python(code: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_runtime_imports_and_runs_without_torch_or_onnx(bundles, decoder):
    script = BLOCK + (
        "import json; from edgeformer import runtime; "
        f"m = runtime.load({str(bundles('demo-decoder'))!r}); "
        f"e = runtime.load({str(bundles('bert-mini'))!r}); "
        "heavy = sorted(k for k, v in sys.modules.items() if v is not None and (k.split('.')[0] in "
        "('torch', 'onnx', 'onnxscript', 'onnx_ir') or k.startswith(('edgeformer.nn', 'edgeformer.export', "
        "'edgeformer.config', 'edgeformer.parity')))); "
        "print(json.dumps({'text': m.generate(['Return the', 'A'], 16), "
        "'emb': e.encode([[1, 2, 3]])['embeddings'].tolist(), 'heavy': heavy, "
        "'torch': sys.modules['torch'], 'onnx': sys.modules['onnx']}))"
    )
    out = json.loads(_python(script))
    assert out["heavy"] == [] and out["torch"] is None and out["onnx"] is None
    assert out["text"] == decoder.generate(["Return the", "A"], 16)
    want = runtime.load(bundles("bert-mini")).encode([[1, 2, 3]])["embeddings"]
    np.testing.assert_allclose(np.array(out["emb"]), want, atol=1e-6)


def _sample(*args: str) -> str:
    argv = [str(SAMPLE), *args]
    code = BLOCK + f"sys.modules['edgeformer'] = None; import runpy; sys.argv = {argv!r}; "
    code += f"runpy.run_path({str(SAMPLE)!r}, run_name='__main__')"
    return _python(code, cwd=SAMPLE.parent)


def test_python_sample_generates_like_the_runtime(bundles, decoder):
    out = json.loads(_sample(str(bundles("demo-decoder")), "Return the", "--max-new-tokens", "24", "--json"))
    assert out["text"] == decoder.generate("Return the", 24)
    assert out["tokens"] == decoder.generate(tokenizer.encode("Return the", bos=True), 24)
    plain = _sample(str(bundles("demo-decoder")), "Return the", "--max-new-tokens", "24")
    assert plain == out["text"] + "\n"
    seq = runtime.load(bundles("transformer-mini"))
    out = json.loads(_sample(str(bundles("transformer-mini")), "--ids", "5,6,7,8", "--max-new-tokens", "8", "--json"))
    assert out["tokens"] == seq.generate([5, 6, 7, 8], 8)


def test_python_sample_embeds_like_the_runtime(bundles):
    out = json.loads(_sample(str(bundles("bert-mini")), "--ids", "5,17,42", "--json"))
    want = runtime.load(bundles("bert-mini")).encode([5, 17, 42])["embeddings"][0]
    assert out["output"] == "embeddings"
    np.testing.assert_allclose(np.array(out["embedding"]), want, atol=1e-6)
    out = json.loads(_sample(str(bundles("demo-encoder")), "Return the absolute value.", "--json"))
    enc = runtime.load(bundles("demo-encoder")).encode("Return the absolute value.")
    assert out["output"] == "mean of last_hidden_state"
    np.testing.assert_allclose(np.array(out["embedding"]), enc["last_hidden_state"][0].mean(0), atol=1e-5)
    np.testing.assert_allclose(np.array(out["logits"]), enc["logits"][0], atol=1e-6)


def test_python_sample_refuses_an_edited_manifest(bundles, tmp_path):
    bundle = Path(shutil.copytree(bundles("bert-mini"), tmp_path / "edited"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"] = {"kind": "factory", "factory": "payload:make"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    argv = [str(SAMPLE), str(bundle), "--ids", "5,17,42"]
    code = BLOCK + f"import runpy; sys.argv = {argv!r}; runpy.run_path({str(SAMPLE)!r}, run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "manifest.json does not match manifest.sha256" in done.stderr, done.stderr


# ----- pieces: sampling on known logits, the strict session helper ---------------------------------


def test_sampling_filters_and_frequencies():
    from edgeformer.runtime.sampling import Sampling, sample

    logits = np.tile(np.array([3.0, 2.0, 1.0, 0.0], dtype=np.float32), (20000, 1))  # (B, V)
    rng = np.random.default_rng(0)
    drawn = sample(logits, Sampling(temperature=1.0), rng)
    freq = np.bincount(drawn, minlength=4) / drawn.size
    softmax = np.exp(logits[0] - 3) / np.exp(logits[0] - 3).sum()  # 0.644, 0.237, 0.087, 0.032
    np.testing.assert_allclose(freq, softmax, atol=0.015)
    assert set(sample(logits, Sampling(1.0, top_k=2), rng).tolist()) == {0, 1}
    assert set(sample(logits, Sampling(1.0, top_p=0.5), rng).tolist()) == {0}  # 0.644 >= 0.5 alone
    assert set(sample(logits, Sampling(1.0, top_p=0.7), rng).tolist()) == {0, 1}
    hot = np.bincount(sample(logits, Sampling(temperature=100.0), rng), minlength=4) / 20000
    assert hot.min() > 0.2  # a high temperature flattens the distribution
    ties = np.array([[1.0, 5.0, 5.0, 0.0]], dtype=np.float32)
    assert sample(ties, Sampling(1.0, top_k=1), rng).tolist() == [1] == sample(ties, Sampling(), rng).tolist()


def test_make_session_stays_strict(bundles):
    from edgeformer.runtime.session import PROVIDERS, ProviderError, make_session, provider_names

    path = bundles("gpt-mini") / "model.onnx"
    session = make_session(path, ("cpu",), threads=1, spinning=False, optimization="disable")
    assert session.get_providers() == ["CPUExecutionProvider"] and PROVIDERS["cuda"] == "CUDAExecutionProvider"
    assert provider_names(["cpu"]) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="'cuda' .* pip install onnxruntime-gpu"):
        make_session(path, ("cuda",))
    with pytest.raises(RuntimeError):
        provider_names(["tensorrt"])

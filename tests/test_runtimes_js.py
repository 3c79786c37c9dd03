"""The JavaScript samples (runtimes/node, runtimes/web) against the Python runtime, on exported bundles.

Four runners of one bundle must agree: edgeformer.runtime (Python), the Node sample
(onnxruntime-node), the web sample under Node (onnxruntime-web, WASM) and the web page in headless
Chromium (onnxruntime-web, WASM): identical greedy tokens for 32 tokens (decoder, encoder-decoder),
embeddings and logits within 1e-4 (encoders). Then the shared JS module's behaviour: sha256 and
path checks, usage errors, the byte tokenizer, the static server.

Needs node and npm, and Chromium for the page. The npm packages of runtimes/node and runtimes/web
are installed by the tests themselves (`npm ci --ignore-scripts`, from the lockfiles, once per
session) when they are missing, so `python -m pytest` runs what CI runs. Without node, npm or
Chromium the tests skip with the reason, except under CI (CI set), where a missing tool fails them
unless .ci/run stated why it could not install it (EDGEFORMER_NO_NODE, EDGEFORMER_NO_CHROMIUM).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeformer import runtime, tokenizer
from edgeformer.runtime.bundle import stamp_manifest

ROOT = Path(__file__).resolve().parent.parent
RUNTIMES = ROOT / "runtimes"
NODE_SAMPLE = RUNTIMES / "node" / "run_bundle.mjs"
WEB_NODE = RUNTIMES / "web" / "run_node.mjs"
WEB_CHROMIUM = RUNTIMES / "web" / "run_chromium.mjs"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TOKENS = 32
TOLERANCE = 1e-4


def _need(present: bool, reason: str, stated: str | None) -> None:
    """Skip with ``reason`` when a tool is missing; under CI fail instead, unless .ci/run ``stated`` why."""
    if present:
        return
    if stated:
        pytest.skip(f"{reason} ({stated})")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI .ci/run installs it (.ci/js-runtimes), so this is a broken install")
    pytest.skip(reason)


def _node() -> str:
    node = shutil.which("node")
    _need(node is not None, "node is not installed", os.environ.get("EDGEFORMER_NO_NODE"))
    return str(node)


@functools.cache
def npm_ci(sample: str) -> str | None:
    """Install runtimes/<sample>'s lockfile packages (`npm ci --ignore-scripts`), once per session;
    None when done, else why not (npm missing, or npm's own error)."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed, so the lockfile packages cannot be installed"
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(command, cwd=RUNTIMES / sample, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return f"`npm ci --ignore-scripts` in runtimes/{sample} did not finish in 600 s"
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return f"`npm ci --ignore-scripts` in runtimes/{sample} failed: {tail}"
    return None


def _package(sample: str, package: str) -> None:
    def installed() -> bool:
        return (RUNTIMES / sample / "node_modules" / package / "package.json").is_file()

    why = None if installed() else npm_ci(sample)
    reason = f"{package} is not installed in runtimes/{sample}: {why}"
    _need(installed(), reason, os.environ.get("EDGEFORMER_NO_NODE"))


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    _need(
        found is not None,
        "Chromium is not installed (apt-get install chromium)",
        os.environ.get("EDGEFORMER_NO_CHROMIUM"),
    )
    return str(found)


RUNNERS = {
    "node": lambda: (_node(), _package("node", "onnxruntime-node"), [str(NODE_SAMPLE)])[2],
    "web-node": lambda: (_node(), _package("web", "onnxruntime-web"), [str(WEB_NODE)])[2],
    "web-chromium": lambda: (
        _node(),
        _package("web", "onnxruntime-web"),
        [str(WEB_CHROMIUM), "--chromium", _chromium(), "--timeout", "120"],
    )[2],
}


def _run(runner: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    command = [_node(), *RUNNERS[runner](), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    if ok:
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    return done


def _json(runner: str, *args: str) -> dict:
    return json.loads(_run(runner, *args, "--json").stdout)


@pytest.fixture(scope="module")
def models(edge_bundle):
    """Python runtime models of the bundles the samples run (exported once per session)."""
    cards = ("demo-decoder", "demo-encoder", "transformer-mini", "bert-mini")
    return {card: (edge_bundle(card), runtime.load(edge_bundle(card), spinning=False)) for card in cards}


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    """int8 bundles (cpu-int8: the encoder's attention as QAttention, the decoder's tied table shared)."""
    from edgeformer.export.source import source_from_card
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_card, resolve_target

    root = tmp_path_factory.mktemp("int8")
    out = {}
    for card in ("demo-encoder", "demo-decoder"):
        export_bundle(source_from_card(resolve_card(card)), resolve_target("cpu-int8"), root / card, check=False)
        out[card] = (root / card, runtime.load(root / card, spinning=False))
    return out


# ----- numbers: every runner computes what the Python runtime computes ------------------------------


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_decoder_greedy_tokens_match_the_python_runtime(models, runner):
    bundle, model = models["demo-decoder"]
    want = model.generate(tokenizer.encode("Return the", bos=True), TOKENS)
    assert len(want) == TOKENS  # no end-of-text within 32 tokens: all 32 are compared
    got = _json(runner, str(bundle), "Return the", "--max-new-tokens", str(TOKENS))
    assert got["tokens"] == want
    assert got["text"] == model.generate("Return the", TOKENS) == tokenizer.decode(want)
    assert got["runtime"].startswith("onnxruntime-node 1." if runner == "node" else "onnxruntime-web 1.")
    if runner == "web-chromium":
        assert "HeadlessChrome/" in got["runtime"]


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_seq2seq_greedy_tokens_match_the_python_runtime(models, runner):
    bundle, model = models["transformer-mini"]
    source = [5, 6, 7, 8, 9, 10]
    want = model.generate(source, TOKENS)
    assert len(want) == TOKENS
    got = _json(runner, str(bundle), "--ids", ",".join(map(str, source)), "--max-new-tokens", str(TOKENS))
    assert got["tokens"] == want and got["text"] is None


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_encoder_embeddings_and_logits_match_the_python_runtime(models, runner):
    bundle, model = models["demo-encoder"]  # classifier: mean of last_hidden_state, and 3 logits
    text = "Return the absolute value of x."
    want = model.encode(text)
    got = _json(runner, str(bundle), text)
    assert got["output"] == "mean of last_hidden_state"
    mean = want["last_hidden_state"][0].mean(0)
    assert np.abs(np.array(got["embedding"]) - mean).max() <= TOLERANCE
    assert np.abs(np.array(got["logits"]) - want["logits"][0]).max() <= TOLERANCE
    assert int(np.argmax(got["logits"])) == int(np.argmax(want["logits"][0]))

    bundle, model = models["bert-mini"]  # an embedding head, token ids (no tokenizer)
    ids = [5, 17, 42, 7, 300, 1000, 2]
    got = _json(runner, str(bundle), "--ids", ",".join(map(str, ids)))
    want_emb = model.encode(ids)["embeddings"][0]
    assert got["output"] == "embeddings" and len(got["embedding"]) == want_emb.size
    assert np.abs(np.array(got["embedding"]) - want_emb).max() <= TOLERANCE


def test_plain_output_is_the_text(models):
    bundle, model = models["demo-decoder"]
    done = _run("node", str(bundle), "class Foo:", "--max-new-tokens", "12")
    assert done.stdout == model.generate("class Foo:", 12) + "\n"


# ----- the bundle is checked, mistakes are messages ----------------------------------------------------


def _edit_manifest(bundle: Path, change) -> None:  # noqa: ANN001
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    stamp_manifest(bundle)  # the digest follows the edit


@pytest.mark.parametrize("runner", ["node", "web-node"])
def test_a_changed_file_is_refused(models, tmp_path, runner):
    bad = Path(shutil.copytree(models["bert-mini"][0], tmp_path / "corrupt"))
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    done = _run(runner, str(bad), "--ids", "1,2,3", ok=False)
    assert done.returncode == 1
    assert "model.onnx does not match its sha256 in manifest.json" in done.stderr and "at " not in done.stderr


@pytest.mark.parametrize("runner", ["node", "web-node"])
def test_an_edited_manifest_is_refused_by_its_digest(models, tmp_path, runner):
    """manifest.sha256 covers the manifest: an edit that is not restamped is refused, as in Python."""
    bundle = Path(shutil.copytree(models["bert-mini"][0], tmp_path / "edited"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"] = {"kind": "factory", "factory": "payload:make"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = _run(runner, str(bundle), "--ids", "1,2,3", ok=False)
    assert done.returncode == 1
    assert "manifest.json does not match manifest.sha256" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["files"].update({"../x.onnx": "0" * 64}), "points outside the bundle"),
        (lambda m: m["files"].update({"/etc/passwd": "0" * 64}), "points outside the bundle"),
        (lambda m: m["files"].update({"C:/x.onnx": "0" * 64}), "points outside the bundle"),
        (lambda m: m["graphs"]["model"].update({"file": "..\\model.onnx"}), "points outside the bundle"),
        (lambda m: m.update({"format_version": 2}), "format_version 2 is not 1"),
        (lambda m: m["graphs"]["model"]["inputs"].pop(), "manifest.json says"),
    ],
)
def test_a_wrong_manifest_is_refused(models, tmp_path, edit, message):
    bundle = Path(shutil.copytree(models["bert-mini"][0], tmp_path / "bundle"))
    _edit_manifest(bundle, edit)
    done = _run("node", str(bundle), "--ids", "1,2,3", ok=False)
    assert done.returncode == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ids", "1,2,1024"], "ids must be integers in [0, 1024) and at most 128 of them"),
        (["some text"], "this bundle has no tokenizer; give token ids"),
        (["--ids", "1,x"], "--ids takes comma-separated integers"),
        (["--ids", "1", "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_usage_mistakes_exit_2_with_a_message(models, args, message):
    done = _run("node", str(models["bert-mini"][0]), *args, ok=False)
    assert done.returncode == 2 and f"error: {message}" in done.stderr, done.stderr


def test_not_a_bundle_and_prompt_too_long(models, tmp_path):
    done = _run("node", str(tmp_path), "--ids", "1", ok=False)
    assert done.returncode == 2 and "is not a bundle (no manifest.json)" in done.stderr
    done = _run("node", str(models["demo-decoder"][0]), "x" * 128, ok=False)  # BOS + 128 bytes > 128 positions
    assert done.returncode == 2 and "at most 128 of them" in done.stderr


# ----- the shared module and the static server ----------------------------------------------------------


def _node_eval(code: str) -> str:
    done = subprocess.run(
        [_node(), "--input-type=module", "-e", code], capture_output=True, text=True, timeout=60, cwd=RUNTIMES / "web"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_byte_tokenizer_matches_python():
    texts = ["Return the", "café ✓ naïve — 数", "tab\tnewline\n", "😀"]
    code = (
        "import { encodeBytes, decodeBytes, argmax } from '../js/edgeformer.mjs';"
        f"const texts = {json.dumps(texts)};"
        "const broken = [99, 97, 102, 0xc3, 257, 0xe2, 0x9c, 256, 258, 33, 0xff];"
        "console.log(JSON.stringify({enc: texts.map((t) => encodeBytes(t, true)), plain: encodeBytes(texts[1], false),"
        " dec: decodeBytes(broken), ties: argmax([1, 5, 5, 0], 0, 4), offset: argmax([9, 1, 2, 2], 1, 3)}));"
    )
    out = json.loads(_node_eval(code))
    assert out["enc"] == [tokenizer.encode(t, bos=True) for t in texts]
    assert out["plain"] == tokenizer.encode(texts[1])
    assert out["dec"] == tokenizer.decode([99, 97, 102, 0xC3, 257, 0xE2, 0x9C, 256, 258, 33, 0xFF])
    assert out["ties"] == 1 == int(np.argmax([1, 5, 5, 0]))  # the first maximum, as numpy
    assert out["offset"] == 1


WASM = "/web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm"
SERVED = ["/web/index.html", "/js/edgeformer.mjs", "/bundle/manifest.json", "/bundle/model.onnx", WASM]
ESCAPES = ["/bundle/..%2f..%2fetc/passwd", "/..%2f..%2f..%2fetc/passwd", "/bundle/%2e%2e/model.onnx", "/nothing.html"]


def test_static_server_serves_the_page_and_bundle_only(models):
    _package("web", "onnxruntime-web")
    bundle = models["bert-mini"][0]
    code = f"""
        import {{ request }} from "node:http";
        import {{ startServer }} from "./serve.mjs";
        const s = await startServer({{ bundleDir: {json.dumps(str(bundle))} }});
        const get = (path) => new Promise((done) => request(s.url + path, (r) => {{
            let n = 0;
            r.on("data", (c) => (n += c.length));
            r.on("end", () => done([r.statusCode, r.headers["content-type"], n]));
        }}).end());
        const out = {{}};
        for (const p of {json.dumps(SERVED + ESCAPES)}) out[p] = await get(p);
        await s.close();
        console.log(JSON.stringify(out));
    """
    out = json.loads(_node_eval(code))
    assert out["/web/index.html"][:2] == [200, "text/html; charset=utf-8"]
    assert out["/js/edgeformer.mjs"][:2] == [200, "text/javascript; charset=utf-8"]
    assert out["/bundle/model.onnx"] == [200, "application/octet-stream", (bundle / "model.onnx").stat().st_size]
    assert out[WASM][:2] == [200, "application/wasm"]
    assert out["/bundle/manifest.json"][0] == 200
    for escape in ESCAPES:
        assert out[escape][0] == 404, escape


def test_missing_tools_fail_under_ci_unless_ci_said_why(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="node is not installed"):
        _need(False, "node is not installed", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI .ci/run installs it"):
        _need(False, "node is not installed", None)
    with pytest.raises(pytest.skip.Exception, match=r"Chromium is not installed \(not root\)"):
        _need(False, "Chromium is not installed", "not root")
    _need(True, "present", None)  # nothing to say


@pytest.mark.parametrize(("sample", "package"), [("node", "onnxruntime-node"), ("web", "onnxruntime-web")])
def test_the_tests_install_the_lockfile_packages_themselves(sample, package, monkeypatch):
    """A fresh clone has no node_modules: with npm present, the tests install them (a new user's
    `python -m pytest` runs the JavaScript tests as CI does), never skip for want of `npm ci`."""
    monkeypatch.delenv("EDGEFORMER_NO_NODE", raising=False)
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node or npm is not installed: the JavaScript tests skip, saying so")
    try:
        _package(sample, package)
    except pytest.skip.Exception as exc:
        pytest.fail(f"skipped although npm is here: {exc}")
    assert (RUNTIMES / sample / "node_modules" / package / "package.json").is_file()


def test_without_npm_the_skip_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("EDGEFORMER_NO_NODE", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys.modules[__name__], "RUNTIMES", tmp_path)  # a clone without node_modules
    npm_ci.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception, match="onnxruntime-node is not installed.*npm is not installed"):
            _package("node", "onnxruntime-node")
    finally:
        npm_ci.cache_clear()


@pytest.mark.parametrize("runner", ["node", "web-node"])
def test_int8_bundles_run_the_same_in_javascript(int8_models, runner):
    """The manifest is standard JSON (JSON.parse refuses Infinity) and onnxruntime-node and -web
    (WASM) run the contrib ops int8 uses (QAttention, DynamicQuantizeMatMul) as Python does."""
    bundle, model = int8_models["demo-encoder"]
    text = "Return the absolute value of x."
    got = _json(runner, str(bundle), text)
    mean = model.encode(text)["last_hidden_state"][0].mean(0)
    assert np.abs(np.array(got["embedding"]) - mean).max() <= TOLERANCE
    bundle, model = int8_models["demo-decoder"]
    got = _json(runner, str(bundle), "Return the", "--max-new-tokens", str(TOKENS))
    assert got["tokens"] == model.generate(tokenizer.encode("Return the", bos=True), TOKENS)


@pytest.mark.parametrize("runner", ["node", "web-node"])
def test_a_local_decoder_generates_through_its_sliding_window_in_javascript(local_decoder_bundle, runner):
    """The JS loop keeps the 2 global tokens and the last window - 1 positions (5 in all) over 16 new
    tokens, and chooses the Python runtime's tokens (which trims the same way, checked against torch)."""
    _, bundle = local_decoder_bundle(2)  # window 4 (tests/conftest.py)
    model = runtime.load(bundle, spinning=False)
    got = _json(runner, str(bundle), "--ids", "5,17,9", "--max-new-tokens", "16")
    assert got["tokens"] == model.generate([5, 17, 9], 16) and len(got["tokens"]) == 16
    assert got["cache_positions"] == 2 + 3

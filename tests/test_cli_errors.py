"""Bad input to every command: exit code 1 (the library refused) or 2 (click: usage), a message
that says what is wrong, and never a traceback.

Every command registered on the group gets the generic cases (an unknown option, a missing or
nonexistent path argument); each command also gets cases of its own: malformed, truncated and
non-UTF-8 cards and targets, corrupted graphs and manifests, missing files, wrong option values.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgeformer.cli import main
from edgeformer.config import render_card
from edgeformer.runtime.bundle import stamp_manifest
from edgeformer.zoo import resolve_card


def _refused(args: list[str], code: int | tuple[int, ...] = (1, 2), contains: str = "") -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    codes = (code,) if isinstance(code, int) else code
    assert isinstance(result.exception, SystemExit), (args, result.exception, result.output)
    assert result.exit_code in codes, (args, result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    assert "Error" in result.output, result.output  # "Error: <message>" from click
    assert contains in result.output, (contains, result.output)
    return result.output


# ----- every command --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(main.commands))
def test_unknown_option_is_a_usage_error(command):
    _refused([command, "--no-such-option"], 2, "No such option")


@pytest.mark.parametrize(
    "command", sorted(n for n, c in main.commands.items() if any(p.param_type_name == "argument" for p in c.params))
)
def test_nonexistent_path_argument(command, tmp_path):
    _refused([command, tmp_path / "does-not-exist"])


# ----- inputs shared by the cases -------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, edge_bundle):
    """Broken cards, targets, graphs and bundles, and a good bundle to be wrong about."""
    good = render_card(resolve_card("gpt-mini"))
    f = {"dir": tmp_path}
    f["truncated card"] = tmp_path / "truncated.toml"
    f["truncated card"].write_text(good[: len(good) // 2])
    f["latin-1 card"] = tmp_path / "latin.toml"
    f["latin-1 card"].write_bytes(good.replace('"gpt-mini"', '"gpt-m\xefni"').encode("latin-1"))
    f["wrong type card"] = tmp_path / "wrongtype.toml"
    f["wrong type card"].write_text(good.replace("n_heads = 8", 'n_heads = "eight"'))
    f["huge card"] = tmp_path / "huge.toml"
    f["huge card"].write_text(good.replace("d_model = 128", "d_model = 65536").replace("n_layers = 2", "n_layers = 96"))
    f["missing checkpoint card"] = tmp_path / "nockpt.toml"
    f["missing checkpoint card"].write_text(good.replace('name = "gpt-mini"', 'name = "x"\ncheckpoint = "gone.bin"'))
    f["random target"] = tmp_path / "random-target.toml"
    f["random target"].write_bytes(bytes(range(256)))
    f["bad target"] = tmp_path / "bad-target.toml"
    f["bad target"].write_text('name = "t"\nprecision = "fp8"\n')
    f["random onnx"] = tmp_path / "random.onnx"
    f["random onnx"].write_bytes(np.random.default_rng(0).bytes(1000))
    f["empty onnx"] = tmp_path / "empty.onnx"
    f["empty onnx"].write_bytes(b"")
    f["truncated onnx"] = tmp_path / "truncated.onnx"
    graph = (edge_bundle("gpt-mini") / "model.onnx").read_bytes()
    f["truncated onnx"].write_bytes(graph[: len(graph) // 3])
    f["bundle"] = edge_bundle("gpt-mini")
    f["no manifest"] = tmp_path / "no-manifest"
    f["no manifest"].mkdir()
    f["garbage manifest"] = tmp_path / "garbage"
    shutil.copytree(f["bundle"], f["garbage manifest"])
    (f["garbage manifest"] / "manifest.json").write_bytes(b"\xff\xfe{not json")
    stamp_manifest(f["garbage manifest"])  # the digest follows the edit
    f["tampered"] = tmp_path / "tampered"
    shutil.copytree(f["bundle"], f["tampered"])
    with open(f["tampered"] / "model.onnx", "ab") as out:
        out.write(b"\0")
    f["missing graph"] = tmp_path / "missing-graph"
    shutil.copytree(f["bundle"], f["missing graph"])
    (f["missing graph"] / "model.onnx").unlink()
    for name, change in MANIFESTS.items():  # manifests the fuzzing found mishandled, now refused
        f[name] = tmp_path / name.replace(" ", "-")
        shutil.copytree(f["bundle"], f[name])
        manifest = json.loads((f[name] / "manifest.json").read_text())
        change(manifest)
        (f[name] / "manifest.json").write_text(json.dumps(manifest))
        stamp_manifest(f[name])  # the digest follows the edit
    f["pickled npz"] = tmp_path / "pickled.npz"
    np.savez(f["pickled npz"], input_ids=np.array([object()], dtype=object))
    f["garbage npz"] = tmp_path / "garbage.npz"
    f["garbage npz"].write_bytes(b"PK\x03\x04 not a zip")
    f["hf dir"] = tmp_path / "hf"
    f["hf dir"].mkdir()
    f["hf bad json"] = tmp_path / "hf-bad"
    f["hf bad json"].mkdir()
    (f["hf bad json"] / "config.json").write_text("{truncated")
    f["hf unknown"] = tmp_path / "hf-unknown"
    f["hf unknown"].mkdir()
    (f["hf unknown"] / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    return f


MANIFESTS = {
    "source list": lambda m: m.update(source=[1]),
    "seed too large": lambda m: m["source"].update(seed=2**70),
    "card not toml": lambda m: m["source"].update(card="[[["),
    "factory unnamed": lambda m: m["source"].update(kind="factory"),
    "precision unknown": lambda m: m.update(precision="fp8"),
    "opset text": lambda m: m.update(opset="x"),
    "config list": lambda m: m.update(config=[1]),
    "checkpoint sha number": lambda m: m["source"].update(checkpoint="/gone.bin", checkpoint_sha256=5),
}


CASES = {
    "models": [(["models", "extra"], 2, "unexpected extra argument")],
    "train": [
        (["train", "no-such-card"], 1, "unknown model card"),
        (["train", "bert-mini"], 1, "give --data FILE"),
        (["train", "demo-encoder", "--steps", "0"], 2, "--steps"),
        (["train", "demo-encoder", "--seed", str(-(2**70))], 2, "--seed"),
        (["train", "{truncated card}"], 1, "not valid TOML"),
        (["train", "{latin-1 card}"], 1, "is not UTF-8"),
    ],
    "import": [
        (["import", "{hf dir}"], 1, "config.json"),
        (["import", "{hf bad json}"], 1, "config.json"),
        (["import", "{hf unknown}"], 1, "Mamba"),
        (["import", "{truncated card}"], 2, "is a file"),
    ],
    "export": [
        (["export", "{truncated card}", "-o", "{dir}/out"], 1, "not valid TOML"),
        (["export", "{latin-1 card}", "-o", "{dir}/out"], 1, "is not UTF-8"),
        (["export", "{wrong type card}", "-o", "{dir}/out"], 1, "[model].n_heads must be an integer"),
        (["export", "{huge card}", "-o", "{dir}/out"], 1, "available; refused before building the model"),
        (["export", "{missing checkpoint card}", "-o", "{dir}/out"], 1, "does not exist"),
        (["export", "gpt-mini", "-t", "{random target}", "-o", "{dir}/out"], 1, "random-target.toml is not UTF-8"),
        (["export", "gpt-mini", "-t", "{bad target}", "-o", "{dir}/out"], 1, "precision 'fp8'"),
        (["export", "gpt-mini", "-t", "no-such-target", "-o", "{dir}/out"], 1, "known targets"),
        (["export", "gpt-mini", "--max-sequence", "1"], 2, "--max-sequence"),
        (["export", "gpt-mini", "--seed", str(2**70)], 2, "--seed"),
        (["export", "no.such.module:factory", "-o", "{dir}/out"], 1, "cannot import"),
        (["export", "os.path:sep", "-o", "{dir}/out"], 1, "no callable"),
        (["export", "gpt-mini", "-o", "{bundle}"], 1, "already exists; pass --force"),
    ],
    "check": [
        (["check", "{no manifest}"], 1, "no manifest.json"),
        (["check", "{garbage manifest}"], 1, "not valid JSON"),
        (["check", "{tampered}"], 1, "does not match its sha256"),
        (["check", "{missing graph}"], 1, "model.onnx is missing"),
        (["check", "{bundle}", "--inputs", "{pickled npz}"], 1, "not a readable .npz"),
        (["check", "{bundle}", "--inputs", "{garbage npz}"], 1, "not a readable .npz"),
        (["check", "{bundle}", "--inputs", "{dir}/none.npz"], 1, "not a readable .npz"),
        (["check", "{bundle}", "--text", "hello"], 1, "needs a byte-level model"),
        (["check", "{bundle}", "--steps", "-1"], 2, "--steps"),
        (["check", "{source list}"], 1, "'source' must be an object"),
        (["check", "{seed too large}"], 1, "seed must be an integer in"),
        (["check", "{card not toml}"], 1, "card is not valid TOML"),
        (["check", "{factory unnamed}"], 1, "names no factory"),
        (["check", "{precision unknown}"], 1, "precision 'fp8' is not one of"),
        (["check", "{opset text}"], 1, "'opset' must be an integer"),
        (["check", "{config list}"], 1, "'config' must be an object"),
        (["check", "{checkpoint sha number}"], 1, "checkpoint_sha256 must be a string"),
    ],
    "fuse": [
        (["fuse", "{random onnx}", "-o", "{dir}/f.onnx"], 1, "not a valid ONNX file"),
        (["fuse", "{empty onnx}", "-o", "{dir}/f.onnx"], 1, "not a valid ONNX file"),
        (["fuse", "{truncated onnx}", "-o", "{dir}/f.onnx"], 1, "not a valid ONNX file"),
        (["fuse", "{no manifest}", "-o", "{dir}/f"], 1, "no manifest.json"),
        (["fuse", "{tampered}", "-o", "{dir}/f"], 1, "does not match its sha256"),
        (["fuse", "{bundle}", "-o", "{dir}/f"], 1, "already fused"),
        (["fuse", "{bundle}", "--form", "bogus"], 2, "--form"),
    ],
    "bench": [
        (["bench", "{no manifest}"], 1, "no manifest.json"),
        (["bench", "{bundle}", "--repeats", "0"], 2, "--repeats"),
        (["bench", "{bundle}", "--batch", "x"], 2, "--batch"),
        (["bench", "{bundle}", "--variants", "nope"], 1, "--variants"),
        (["bench", "{tampered}"], 1, "model.onnx"),
    ],
    "quantize": [
        (["quantize", "{no manifest}"], 1, "no manifest.json"),
        (["quantize", "{tampered}", "-o", "{dir}/q"], 1, "does not match its sha256"),
        (["quantize", "{bundle}", "--precision", "int3"], 2, "--precision"),
        (["quantize", "{bundle}", "--budget", "bogus"], 2, "--budget"),
        (["quantize", "{bundle}", "--calibration", "{dir}/none.npz", "-o", "{dir}/q"], 1, "calibration"),
        (["quantize", "{bundle}", "--calibration", "{pickled npz}", "-o", "{dir}/q"], 1, "not a readable .npz"),
        (["quantize", "{bundle}", "--calibration", "{garbage npz}", "-o", "{dir}/q"], 1, "not a readable .npz"),
    ],
}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [pytest.param(*case, id=f"{name}-{i}") for name, cases in CASES.items() for i, case in enumerate(cases)],
)
def test_bad_input(files, args, code, message):
    if args[0] not in main.commands:
        pytest.skip(f"there is no `edgeformer {args[0]}` command in this checkout")
    filled = [a.format(**files) if "{" in a else a for a in args]
    _refused(filled, code, message)
    assert not (files["dir"] / "out").exists() and not (files["dir"] / "q").exists()

#!/usr/bin/env python3
"""Run an edgeformer bundle with nothing but onnxruntime and numpy (no edgeformer, no torch).

    python run_bundle.py BUNDLE_DIR "Return the"            # decoder: greedy continuation of the text
    python run_bundle.py BUNDLE_DIR "Return the" --json     # encoder: embeddings as JSON
    python run_bundle.py BUNDLE_DIR --ids 5,17,42           # token ids instead of text

What it does, so an app can copy it: read manifest.json (graphs, their inputs and outputs, the
model config), check it against manifest.sha256 and every file against its sha256, open one
onnxruntime session per graph from the checked bytes, and

  encoder          run `model` once; print `embeddings` (or the mean of `last_hidden_state` over
                   the tokens) and `logits` when the graph has them
  decoder          prefill the prompt, then one token at a time with the KV cache
                   (`present.*` outputs become the next `past_key_values.*` inputs), greedy,
                   stopping at the config's eos_token_id
  encoder-decoder  run `encoder` once (it also emits the cross-attention cache), then `decoder`
                   greedily from the config's bos_token_id

Byte-level bundles (manifest "tokenizer": "bytes") take text: ids 0-255 are UTF-8 bytes, 256 is
padding, 257 begin-of-text, 258 end-of-text. Decoder prompts start with begin-of-text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

BOS = 257  # byte-level tokenizer: begin-of-text


def encode_bytes(text: str, bos: bool) -> list[int]:
    return ([BOS] if bos else []) + list(text.encode("utf-8"))


def decode_bytes(ids: list[int]) -> str:
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


def read_manifest(bundle: Path) -> tuple[dict, dict[str, bytes]]:
    """manifest.json, checked against manifest.sha256 (its sha256, written beside it), and the bytes
    of every file it lists, each checked against its sha256. Sessions are opened from these bytes,
    so a file changed on disk after the check is never what runs."""
    raw = (bundle / "manifest.json").read_bytes()
    stamp = bundle / "manifest.sha256"
    if stamp.is_file():
        if hashlib.sha256(raw).hexdigest() != stamp.read_text(encoding="utf-8").split()[0]:
            sys.exit("error: manifest.json does not match manifest.sha256 (edited or corrupted); re-export it")
    else:
        print(
            "warning: no manifest.sha256 (bundle from an older edgeformer): edits cannot be detected", file=sys.stderr
        )
    manifest = json.loads(raw)
    verified = {}
    for name, digest in manifest["files"].items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            sys.exit(f"error: manifest file {name!r} points outside the bundle")
        verified[name] = (bundle / name).read_bytes()
        if hashlib.sha256(verified[name]).hexdigest() != digest:
            sys.exit(f"error: {name} does not match its sha256 in manifest.json")
    return manifest, verified


SHORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "coreml": "CoreMLExecutionProvider"}


def session(files: dict[str, bytes], manifest: dict, graph: str, provider: str) -> ort.InferenceSession:
    """A session on ``provider`` when this onnxruntime has it, with the CPU provider behind it,
    opened from the verified bytes of the graph."""
    wanted = [SHORT.get(provider, provider), "CPUExecutionProvider"]
    providers = [p for p in dict.fromkeys(wanted) if p in ort.get_available_providers()]
    file = manifest["graphs"][graph]["file"]
    if f"{file}.data" in files:
        sys.exit(f"error: {file} keeps its weights in external data; this sample runs self-contained graphs")
    return ort.InferenceSession(files[file], providers=providers)


def run(sess: ort.InferenceSession, feeds: dict) -> dict:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def empty_cache(manifest: dict, graph: str, batch: int) -> dict:
    """Zero-length self-attention caches: inputs past_key_values.* of length `past_sequence`."""
    return {
        s["name"]: np.zeros((batch, s["shape"][1], 0, s["shape"][3]), dtype=np.float32)
        for s in manifest["graphs"][graph]["inputs"]
        if s["name"].startswith("past_key_values.") and s["shape"][2] == "past_sequence"
    }


def as_past(outs: dict) -> dict:
    return {n.replace("present.", "past_key_values.", 1): v for n, v in outs.items() if n.startswith("present.")}


def sliding_window(manifest: dict) -> tuple[int, int, list[str]] | None:
    """A local decoder's (window, global tokens, caches to trim), when every growing cache is listed."""
    entry = manifest["graphs"]["model"].get("sliding_window")
    if not entry:
        return None
    specs = manifest["graphs"]["model"]["inputs"]
    names = [s["name"] for s in specs if s["name"].startswith("past_key_values.") and s["shape"][2] == "past_sequence"]
    if not names or any(int(n.split(".")[1]) not in entry["layers"] for n in names):
        return None
    return entry["window"], entry.get("global_tokens", 0), names


def trim(past: dict, window: tuple[int, int, list[str]]) -> dict:
    """One unpadded row's caches cut to the global tokens (its first positions) and the last window - 1."""
    size, globals_, names = window
    for name in names:
        cache = past[name]  # (1, H, L, D)
        if cache.shape[2] > globals_ + size - 1:
            past[name] = np.concatenate([cache[:, :, :globals_], cache[:, :, cache.shape[2] - (size - 1) :]], axis=2)
    return past


def greedy_decoder(sess: ort.InferenceSession, manifest: dict, ids: list[int], steps: int, eos: int) -> list[int]:
    """Greedy tokens with the KV cache; a local decoder's cache is kept to its sliding window (flat memory)."""
    window = sliding_window(manifest)
    feeds = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "position_ids": np.arange(len(ids), dtype=np.int64)[None],
        **empty_cache(manifest, "model", 1),
    }
    tokens: list[int] = []
    for _ in range(steps):
        outs = run(sess, feeds)
        token = int(outs["logits"][0, -1].argmax())
        tokens.append(token)
        if token == eos:
            break
        past = trim(as_past(outs), window) if window else as_past(outs)
        held = next(iter(past.values())).shape[2]
        feeds = {
            "input_ids": np.array([[token]], dtype=np.int64),
            "attention_mask": np.ones((1, held + 1), dtype=np.int64),  # the cache and the new token
            "position_ids": np.array([[len(ids) + len(tokens) - 1]], dtype=np.int64),  # counted over every token
            **past,
        }
    return tokens


def greedy_seq2seq(enc, dec, manifest: dict, ids: list[int], steps: int, start: int, eos: int) -> list[int]:
    source = np.array([ids], dtype=np.int64)
    mask = np.ones_like(source)
    cross = as_past(run(enc, {"input_ids": source, "attention_mask": mask}))
    feeds = {"encoder_attention_mask": mask, **cross, **empty_cache(manifest, "decoder", 1)}
    token, tokens = start, []
    for _ in range(steps):
        outs = run(dec, {**feeds, "input_ids": np.array([[token]], dtype=np.int64)})
        token = int(outs["logits"][0, -1].argmax())
        tokens.append(token)
        if token == eos:
            break
        feeds.update(as_past(outs))
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle directory (holds manifest.json)")
    parser.add_argument("text", nargs="?", default="", help="input text (byte-level bundles)")
    parser.add_argument("--ids", help="comma-separated token ids instead of text")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--provider", default="cpu", help="cpu, cuda, coreml or a full provider name")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    if not (args.bundle / "manifest.json").is_file():
        parser.error(f"{args.bundle} is not a bundle (no manifest.json)")
    manifest, files = read_manifest(args.bundle)
    family, cfg = manifest["family"], manifest["config"]
    if args.ids:
        ids = [int(i) for i in args.ids.split(",")]
    elif manifest.get("tokenizer") == "bytes":
        ids = encode_bytes(args.text, bos=family == "decoder")
    else:
        parser.error("this bundle has no tokenizer; give token ids with --ids 1,2,3")
    if not ids:
        parser.error("give some text or --ids")
    if max(ids) >= cfg["vocab_size"] or min(ids) < 0 or len(ids) > cfg["max_positions"]:
        parser.error(f"ids must be in [0, {cfg['vocab_size']}) and at most {cfg['max_positions']} of them")

    if family == "encoder":
        sess = session(files, manifest, "model", args.provider)
        outs = run(
            sess, {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        )
        name = "embeddings" if "embeddings" in outs else "mean of last_hidden_state"
        vector = outs["embeddings"][0] if "embeddings" in outs else outs["last_hidden_state"][0].mean(0)
        result = {"output": name, "embedding": vector.tolist()}
        if "logits" in outs:
            result["logits"] = outs["logits"][0].tolist()
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{name} ({vector.size}): [{', '.join(f'{v:.4f}' for v in vector[:8])}, ...]")
            if "logits" in outs and outs["logits"].ndim == 2:
                print(f"logits: {np.round(outs['logits'][0], 4).tolist()} (argmax {int(outs['logits'][0].argmax())})")
        return 0

    steps = min(args.max_new_tokens, cfg["max_positions"] - (len(ids) if family == "decoder" else 0))
    if steps < 1:
        parser.error(f"the prompt leaves no room to generate within max_positions {cfg['max_positions']}")
    if family == "decoder":
        tokens = greedy_decoder(
            session(files, manifest, "model", args.provider), manifest, ids, steps, cfg["eos_token_id"]
        )
    elif family == "encoder-decoder":
        enc = session(files, manifest, "encoder", args.provider)
        dec = session(files, manifest, "decoder", args.provider)
        tokens = greedy_seq2seq(enc, dec, manifest, ids, steps, max(cfg["bos_token_id"], 0), cfg["eos_token_id"])
    else:
        parser.error(f"this sample runs encoder, decoder and encoder-decoder bundles, not {family!r}")
    text = decode_bytes(tokens) if manifest.get("tokenizer") == "bytes" else None
    if args.json:
        print(json.dumps({"tokens": tokens, "text": text}))
    else:
        print(text if text is not None else " ".join(map(str, tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

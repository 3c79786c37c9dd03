// Running an edgeformer bundle from JavaScript: the part shared by runtimes/node (onnxruntime-node)
// and runtimes/web (onnxruntime-web, under Node or in a browser).
//
// It reads manifest.json, checks every file's sha256, opens one session per graph and runs the
// family's loop, exactly as runtimes/python/run_bundle.py does:
//
//   encoder          run `model` once: `embeddings` (or the mean of `last_hidden_state` over the
//                    tokens) and `logits` when the graph has them
//   decoder          prefill the prompt, then one token at a time with the KV cache (`present.*`
//                    outputs become the next `past_key_values.*` inputs), greedy, stopping at the
//                    config's eos_token_id
//   encoder-decoder  run `encoder` once (it also emits the cross-attention cache), then `decoder`
//                    greedily from the config's bos_token_id
//
// Nothing here imports onnxruntime or touches the file system: the caller passes its `ort` module
// (onnxruntime-node and onnxruntime-web share one API) and a `readFile(name) -> Uint8Array`
// (fs in Node, fetch in a browser). The only platform APIs used are TextEncoder, TextDecoder and
// crypto.subtle, which Node >= 18 and every browser have (a browser only in a secure context:
// https or localhost).

export const PAD = 256; // byte-level tokenizer: padding
export const BOS = 257; // begin-of-text (decoder prompts start with it)
export const EOS = 258; // end-of-text
export const FORMAT_VERSION = 1; // the manifest format this reader understands

/** A bundle that is not what its manifest says, or a request it cannot serve; the message says why. */
export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = "BundleError";
  }
}

/** A mistake in what the caller asked for (ids out of range, no text, ...). */
export class InputError extends Error {
  constructor(message) {
    super(message);
    this.name = "InputError";
  }
}

// ----- byte-level tokenizer (edgeformer/tokenizer.py) --------------------------------------------

/** Token ids of text: its UTF-8 bytes, after begin-of-text when `bos`. */
export function encodeBytes(text, bos) {
  return [...(bos ? [BOS] : []), ...new TextEncoder().encode(text)];
}

/** Text of byte ids; special ids are dropped and broken UTF-8 is replaced, never thrown. */
export function decodeBytes(ids) {
  return new TextDecoder("utf-8").decode(Uint8Array.from(ids.filter((i) => i >= 0 && i < 256)));
}

// ----- the bundle -------------------------------------------------------------------------------

export async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Refuse a file name from the manifest that could leave the bundle (absolute, drive, `..`). */
export function checkMemberName(name) {
  if (typeof name !== "string" || !name || name.includes("\0")) {
    throw new BundleError(`manifest names a file ${JSON.stringify(name)} that is not a plain file name`);
  }
  const parts = name.split(/[\\/]/);
  if (/^[\\/]/.test(name) || /^[A-Za-z]:/.test(name) || parts.includes("..")) {
    throw new BundleError(`manifest file ${JSON.stringify(name)} points outside the bundle (refused)`);
  }
  return name;
}

/** Parse and check manifest.json (given as bytes or text). */
export function parseManifest(raw) {
  let manifest;
  try {
    manifest = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
  } catch (err) {
    throw new BundleError(`manifest.json is not valid JSON (${err.message})`);
  }
  if (manifest?.format_version !== FORMAT_VERSION) {
    throw new BundleError(
      `manifest.json: format_version ${JSON.stringify(manifest?.format_version)} is not ${FORMAT_VERSION}; ` +
        "re-export the bundle with a matching edgeformer",
    );
  }
  if (!manifest.graphs || typeof manifest.graphs !== "object" || !Object.keys(manifest.graphs).length) {
    throw new BundleError("manifest.json lists no graphs");
  }
  if (!manifest.files || typeof manifest.files !== "object") {
    throw new BundleError("manifest.json has no 'files' (file name -> sha256)");
  }
  return manifest;
}

/**
 * Check manifest.json's bytes against manifest.sha256 (its sha256 in `sha256sum` format, written
 * beside it by every edgeformer that writes manifest digests) and, when given, against
 * the digest the app pinned. A bundle without manifest.sha256 (an older edgeformer) is accepted
 * with a warning unless a digest is pinned.
 */
export async function checkManifestDigest(raw, readFile, expected = null) {
  const actual = await sha256Hex(raw);
  let stamp = null;
  try {
    stamp = new TextDecoder().decode(await readFile("manifest.sha256")).trim().split(/\s+/)[0];
  } catch {
    stamp = null;
  }
  if (stamp !== null && stamp !== actual) {
    throw new BundleError("manifest.json does not match manifest.sha256 (edited or corrupted); re-export it");
  }
  if (expected !== null && expected.toLowerCase() !== actual) {
    throw new BundleError(`manifest.json has sha256 ${actual}, not the pinned ${expected}; this is not the bundle you expect`);
  }
  if (stamp === null && expected === null) {
    console.warn("edgeformer: manifest.json has no manifest.sha256 (an older bundle): edits cannot be detected");
  }
  return actual;
}

/**
 * Open a bundle: read manifest.json through `readFile`, check every listed file's sha256 (unless
 * `verify` is false), and open one session per graph from the checked bytes.
 *
 * ort: the onnxruntime module (onnxruntime-node or onnxruntime-web).
 * readFile: async (name) -> Uint8Array, name relative to the bundle directory.
 * sessionOptions: passed to ort.InferenceSession.create (executionProviders, intraOpNumThreads, ...).
 */
export async function openBundle(ort, readFile, { verify = true, sessionOptions = {}, expectManifestSha256 = null } = {}) {
  const raw = await readFile("manifest.json");
  if (verify) await checkManifestDigest(raw, readFile, expectManifestSha256);
  const manifest = parseManifest(raw);
  const bytes = {};
  for (const [name, digest] of Object.entries(manifest.files)) {
    checkMemberName(name);
    bytes[name] = await readFile(name);
    if (verify && (await sha256Hex(bytes[name])) !== digest) {
      throw new BundleError(`${name} does not match its sha256 in manifest.json (changed or corrupted); re-export it`);
    }
  }
  const sessions = {};
  for (const [graph, entry] of Object.entries(manifest.graphs)) {
    const file = checkMemberName(entry.file);
    if (!(file in bytes)) {
      throw new BundleError(`graph ${graph}: ${file} has no sha256 in the manifest's files`);
    }
    if (file.endsWith(".onnx") && Object.keys(manifest.files).some((f) => f.startsWith(`${file}.data`))) {
      throw new BundleError(`${file} keeps its weights in external data; this sample runs self-contained graphs`);
    }
    let session;
    try {
      session = await ort.InferenceSession.create(bytes[file], sessionOptions);
    } catch (err) {
      throw new BundleError(`onnxruntime could not open ${file}: ${String(err.message ?? err).split("\n")[0]}`);
    }
    const want = entry.inputs.map((s) => s.name).sort();
    const got = [...session.inputNames].sort();
    if (want.join() !== got.join()) {
      throw new BundleError(`${file} takes inputs ${got.join(", ")}, manifest.json says ${want.join(", ")}`);
    }
    sessions[graph] = session;
  }
  return { manifest, sessions };
}

// ----- tensors ----------------------------------------------------------------------------------

function int64(ort, values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

function range(n, start = 0) {
  return Array.from({ length: n }, (_, i) => start + i);
}

/** Zero-length self-attention caches (1, heads, 0, head_dim) for the inputs of length `past_sequence`. */
function emptyCache(ort, graph) {
  const feeds = {};
  for (const spec of graph.inputs) {
    if (spec.name.startsWith("past_key_values.") && spec.shape[2] === "past_sequence") {
      feeds[spec.name] = new ort.Tensor("float32", new Float32Array(0), [1, spec.shape[1], 0, spec.shape[3]]);
    }
  }
  return feeds;
}

/** `present.*` outputs as the next step's `past_key_values.*` inputs. */
function asPast(outputs) {
  const past = {};
  for (const [name, tensor] of Object.entries(outputs)) {
    if (name.startsWith("present.")) past[name.replace("present.", "past_key_values.")] = tensor;
  }
  return past;
}

/**
 * The sliding window of a local decoder's graph (manifest `sliding_window`), or null: the cache
 * inputs to trim, the window and the global tokens. One attention mask serves every layer, so only
 * when every `past_sequence` cache belongs to a listed layer (as edgeformer/runtime/window.py).
 */
export function slidingWindow(graph) {
  const entry = graph.sliding_window;
  if (!entry) return null;
  const names = graph.inputs
    .filter((s) => s.name.startsWith("past_key_values.") && s.shape[2] === "past_sequence")
    .map((s) => s.name);
  const layers = new Set(entry.layers ?? []);
  if (!names.length || names.some((n) => !layers.has(Number(n.split(".")[1])))) return null;
  return { window: entry.window, globalTokens: entry.global_tokens ?? 0, names };
}

/**
 * One unpadded row's cache (1, heads, L, head_dim) cut to what the next query can see: the first
 * `globalTokens` positions (the global tokens) and the last window - 1. Shorter caches are returned as they are.
 */
export function trimCache(ort, tensor, window) {
  const [batch, heads, length, dim] = tensor.dims;
  const g = window.globalTokens;
  const keep = window.window - 1;
  if (length <= g + keep) return tensor;
  const out = new tensor.data.constructor(batch * heads * (g + keep) * dim);
  for (let h = 0; h < batch * heads; h++) {
    const src = h * length * dim;
    const dst = h * (g + keep) * dim;
    out.set(tensor.data.subarray(src, src + g * dim), dst);
    out.set(tensor.data.subarray(src + (length - keep) * dim, src + length * dim), dst + g * dim);
  }
  return new ort.Tensor(tensor.type, out, [batch, heads, g + keep, dim]);
}

/** Index of the largest of `count` values from `offset` (the first one on ties, as numpy's argmax). */
export function argmax(data, offset, count) {
  let best = 0;
  for (let i = 1; i < count; i++) if (data[offset + i] > data[offset + best]) best = i;
  return best;
}

/** Nested arrays of a tensor's data without its batch dimension (batch 1). */
function firstRow(tensor) {
  const dims = tensor.dims.slice(1);
  const data = Array.from(tensor.data);
  const nest = (offset, d) => {
    if (d === dims.length) return data[offset];
    const stride = dims.slice(d + 1).reduce((a, b) => a * b, 1);
    return range(dims[d]).map((i) => nest(offset + i * stride, d + 1));
  };
  return nest(0, 0);
}

async function run(session, feeds) {
  try {
    return await session.run(feeds);
  } catch (err) {
    throw new BundleError(`onnxruntime failed: ${String(err.message ?? err).split("\n")[0]}`);
  }
}

// ----- the loops ----------------------------------------------------------------------------------

/** Run an encoder once: {output, embedding, logits?} as run_bundle.py prints them. */
export async function encode(ort, session, ids) {
  const n = ids.length;
  const outs = await run(session, { input_ids: int64(ort, ids, [1, n]), attention_mask: int64(ort, ids.map(() => 1), [1, n]) });
  let output = "embeddings";
  let embedding;
  if (outs.embeddings) {
    embedding = firstRow(outs.embeddings);
  } else {
    output = "mean of last_hidden_state";
    const [, t, c] = outs.last_hidden_state.dims;
    const data = outs.last_hidden_state.data;
    embedding = range(c).map((j) => range(t).reduce((sum, i) => sum + data[i * c + j], 0) / t);
  }
  const result = { output, embedding };
  if (outs.logits) result.logits = firstRow(outs.logits);
  return result;
}

/**
 * Greedy continuation of one prompt by a decoder-only graph with the KV cache; stops at `eos`.
 * A local decoder's cache is trimmed to its sliding window between steps (memory stays flat);
 * `stats.cache` is the most cache positions held.
 */
export async function greedyDecoder(ort, session, graph, ids, steps, eos, onToken = () => {}, stats = {}) {
  const window = slidingWindow(graph);
  stats.cache = 0;
  let feeds = {
    input_ids: int64(ort, ids, [1, ids.length]),
    attention_mask: int64(ort, ids.map(() => 1), [1, ids.length]),
    position_ids: int64(ort, range(ids.length), [1, ids.length]),
    ...emptyCache(ort, graph),
  };
  const tokens = [];
  for (let step = 0; step < steps; step++) {
    const outs = await run(session, feeds);
    const [, t, v] = outs.logits.dims;
    const token = argmax(outs.logits.data, (t - 1) * v, v);
    tokens.push(token);
    onToken(token);
    if (token === eos) break;
    const past = asPast(outs);
    for (const name of window ? window.names : []) past[name] = trimCache(ort, past[name], window);
    const held = Object.values(past)[0].dims[2];
    stats.cache = Math.max(stats.cache, held);
    feeds = {
      input_ids: int64(ort, [token], [1, 1]),
      attention_mask: int64(ort, range(held + 1).map(() => 1), [1, held + 1]), // the cache + the new token
      position_ids: int64(ort, [ids.length + tokens.length - 1], [1, 1]), // counted over every token
      ...past,
    };
  }
  return tokens;
}

/** Greedy decoding of an encoder-decoder: the encoder (and the cross keys/values) runs once. */
export async function greedySeq2seq(ort, encoder, decoder, decoderGraph, ids, steps, start, eos, onToken = () => {}) {
  const mask = int64(ort, ids.map(() => 1), [1, ids.length]);
  const cross = asPast(await run(encoder, { input_ids: int64(ort, ids, [1, ids.length]), attention_mask: mask }));
  let cache = emptyCache(ort, decoderGraph);
  let token = start;
  const tokens = [];
  for (let step = 0; step < steps; step++) {
    const outs = await run(decoder, { input_ids: int64(ort, [token], [1, 1]), encoder_attention_mask: mask, ...cross, ...cache });
    const [, t, v] = outs.logits.dims;
    token = argmax(outs.logits.data, (t - 1) * v, v);
    tokens.push(token);
    onToken(token);
    if (token === eos) break;
    cache = asPast(outs);
  }
  return tokens;
}

// ----- one request, as the samples run it --------------------------------------------------------

/**
 * Token ids for a request: `ids` (an array of integers) when given, else `text` through the
 * byte-level tokenizer (decoders get begin-of-text first). Checked against the vocabulary and
 * max_positions.
 */
export function requestIds(manifest, { text = "", ids = null } = {}) {
  const cfg = manifest.config ?? {};
  let tokens;
  if (ids !== null && ids !== undefined) {
    tokens = ids;
  } else if (manifest.tokenizer === "bytes") {
    tokens = text ? encodeBytes(text, manifest.family === "decoder") : [];
  } else {
    throw new InputError("this bundle has no tokenizer; give token ids (--ids 1,2,3)");
  }
  if (!tokens.length) throw new InputError("give some text or token ids");
  if (tokens.some((i) => !Number.isInteger(i) || i < 0 || i >= cfg.vocab_size) || tokens.length > cfg.max_positions) {
    throw new InputError(`ids must be integers in [0, ${cfg.vocab_size}) and at most ${cfg.max_positions} of them`);
  }
  return tokens;
}

/**
 * Run one request on an open bundle and return what runtimes/python/run_bundle.py prints with
 * --json: encoders {output, embedding, logits?}; decoders and encoder-decoders {tokens, text}
 * (text is null for bundles without the byte-level tokenizer).
 */
export async function runRequest(ort, { manifest, sessions }, { text = "", ids = null, maxNewTokens = 32, onToken } = {}) {
  const family = manifest.family;
  const cfg = manifest.config ?? {};
  const tokens = requestIds(manifest, { text, ids });
  if (family === "encoder") return encode(ort, sessions.model, tokens);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw new InputError(`max new tokens must be a positive integer, got ${maxNewTokens}`);
  }
  const steps = Math.min(maxNewTokens, cfg.max_positions - (family === "decoder" ? tokens.length : 0));
  if (steps < 1) throw new InputError(`the prompt leaves no room to generate within max_positions ${cfg.max_positions}`);
  let out;
  const stats = {};
  if (family === "decoder") {
    const graph = manifest.graphs.model;
    out = await greedyDecoder(ort, sessions.model, graph, tokens, steps, cfg.eos_token_id, onToken, stats);
  } else if (family === "encoder-decoder") {
    const start = Math.max(cfg.bos_token_id ?? 0, 0);
    const graph = manifest.graphs.decoder;
    out = await greedySeq2seq(ort, sessions.encoder, sessions.decoder, graph, tokens, steps, start, cfg.eos_token_id, onToken);
  } else {
    throw new BundleError(`this sample runs encoder, decoder and encoder-decoder bundles, not ${JSON.stringify(family)}`);
  }
  const result = { tokens: out, text: manifest.tokenizer === "bytes" ? decodeBytes(out) : null };
  if (family === "decoder" && slidingWindow(manifest.graphs.model)) result.cache_positions = stats.cache;
  return result;
}

/** The human-readable form of a result (what the samples print without --json). */
export function formatResult(result) {
  if ("tokens" in result) return result.text ?? result.tokens.join(" ");
  const head = result.embedding.slice(0, 8).map((v) => v.toFixed(4));
  const lines = [`${result.output} (${result.embedding.length}): [${head.join(", ")}, ...]`];
  if (Array.isArray(result.logits) && typeof result.logits[0] === "number") {
    const best = argmax(result.logits, 0, result.logits.length);
    lines.push(`logits: [${result.logits.map((v) => v.toFixed(4)).join(", ")}] (argmax ${best})`);
  }
  return lines.join("\n");
}

// The command line shared by runtimes/node/run_bundle.mjs (onnxruntime-node) and
// runtimes/web/run_node.mjs (onnxruntime-web under Node). Node only: it reads the bundle with fs.
//
//   node run_bundle.mjs BUNDLE_DIR "Return the"            decoder: greedy continuation of the text
//   node run_bundle.mjs BUNDLE_DIR "Return the" --json     the result as JSON (as run_bundle.py --json)
//   node run_bundle.mjs BUNDLE_DIR --ids 5,17,42           token ids instead of text
//
// Exit codes: 0 done, 1 the bundle is wrong (hash, manifest, onnxruntime), 2 a usage mistake.

import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";

import { BundleError, InputError, formatResult, openBundle, runRequest } from "./edgeformer.mjs";

const USAGE = `usage: BUNDLE_DIR [TEXT] [--ids 1,2,3] [--max-new-tokens N] [--provider NAME] [--threads N] [--json]

  BUNDLE_DIR          a bundle from \`edgeformer export\` (holds manifest.json)
  TEXT                input text (byte-level bundles: the demo models)
  --ids 1,2,3         token ids instead of text
  --max-new-tokens N  tokens to generate (decoders, encoder-decoders; default 32)
  --provider NAME     execution provider (default: %PROVIDER%)
  --threads N         intra-op threads (default: onnxruntime's)
  --json              print the result as JSON`;

export function parseArgs(argv) {
  const args = { positional: [], ids: null, maxNewTokens: 32, provider: null, threads: null, json: false, help: false };
  const value = (i, flag) => {
    if (i >= argv.length) throw new InputError(`${flag} needs a value`);
    return argv[i];
  };
  const positiveInt = (text, flag) => {
    if (!/^\d+$/.test(text) || Number(text) < 1) throw new InputError(`${flag} must be a positive integer, got ${text}`);
    return Number(text);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--json") args.json = true;
    else if (arg === "-h" || arg === "--help") args.help = true;
    else if (arg === "--ids") {
      const text = value(++i, arg);
      if (!/^-?\d+(,-?\d+)*$/.test(text)) throw new InputError(`--ids takes comma-separated integers, got ${text}`);
      args.ids = text.split(",").map(Number);
    } else if (arg === "--max-new-tokens") args.maxNewTokens = positiveInt(value(++i, arg), arg);
    else if (arg === "--threads") args.threads = positiveInt(value(++i, arg), arg);
    else if (arg === "--provider") args.provider = value(++i, arg);
    else if (arg.startsWith("--")) throw new InputError(`unknown option ${arg}`);
    else args.positional.push(arg);
  }
  if (!args.help && (args.positional.length < 1 || args.positional.length > 2)) {
    throw new InputError("give a bundle directory and, optionally, the text");
  }
  return args;
}

/**
 * Run the command line with an onnxruntime module. `runtime` names it for the output
 * ("onnxruntime-node"); `defaultProvider` is its CPU provider ("cpu" for node, "wasm" for web).
 * Returns the exit code.
 */
export async function main(ort, argv, { runtime, defaultProvider, out = console.log, err = console.error } = {}) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    err(`${USAGE.replace("%PROVIDER%", defaultProvider)}\nerror: ${e.message}`);
    return 2;
  }
  if (args.help) {
    out(USAGE.replace("%PROVIDER%", defaultProvider));
    return 0;
  }
  const [dir, text = ""] = args.positional;
  if (!existsSync(join(dir, "manifest.json"))) {
    err(`error: ${dir} is not a bundle (no manifest.json)`);
    return 2;
  }
  const sessionOptions = { executionProviders: [args.provider ?? defaultProvider], graphOptimizationLevel: "all" };
  if (args.threads) sessionOptions.intraOpNumThreads = args.threads;
  try {
    const bundle = await openBundle(ort, async (name) => new Uint8Array(await readFile(join(dir, name))), {
      sessionOptions,
    });
    const result = await runRequest(ort, bundle, { text, ids: args.ids, maxNewTokens: args.maxNewTokens });
    out(args.json ? JSON.stringify({ ...result, runtime }) : formatResult(result));
    return 0;
  } catch (e) {
    if (e instanceof InputError) {
      err(`error: ${e.message}`);
      return 2;
    }
    if (e instanceof BundleError || e?.code === "ENOENT") {
      err(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

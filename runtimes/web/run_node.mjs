#!/usr/bin/env node
// Run an edgeformer bundle with onnxruntime-web (WASM) under Node: the same code the page
// (index.html) runs in a browser, with the bundle read from disk. See README.md.
import * as ort from "onnxruntime-web";

import { main } from "../js/cli.mjs";

ort.env.wasm.numThreads = 1; // one thread: the same numbers as the browser page, no worker start-up
process.exitCode = await main(ort, process.argv.slice(2), {
  runtime: `onnxruntime-web ${ort.env.versions.web ?? ort.env.versions.common} (wasm)`,
  defaultProvider: "wasm",
});

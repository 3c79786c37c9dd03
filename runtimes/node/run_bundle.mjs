#!/usr/bin/env node
// Run an edgeformer bundle with onnxruntime-node: see README.md. The bundle reading, the byte
// tokenizer and the generation loops are in ../js/edgeformer.mjs, shared with the web sample.
import * as ort from "onnxruntime-node";

import { main } from "../js/cli.mjs";

process.exitCode = await main(ort, process.argv.slice(2), {
  runtime: `onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common}`,
  defaultProvider: "cpu",
});

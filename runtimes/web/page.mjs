// The browser side of the web sample: the same ../js/edgeformer.mjs as the Node samples, with the
// bundle fetched over HTTP. Query parameters: bundle (URL of the bundle directory, default
// /bundle/), text, ids (1,2,3), max_new_tokens (default 32), report=1 (POST the JSON result to
// /result, for run_chromium.mjs). With text or ids it runs on load; the form runs it again.
//
// The result is written into <pre id="result"> as JSON (data-status="done" or "error"), so
// `chromium --headless=new --dump-dom` or any DevTools client can read it too.

import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

import { formatResult, openBundle, runRequest } from "../js/edgeformer.mjs";

ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation (COOP/COEP); one keeps the page simple

const params = new URLSearchParams(location.search);
const bundleUrl = new URL(params.get("bundle") ?? "/bundle/", location.href);
const resultEl = document.getElementById("result");
const statusEl = document.getElementById("status");
document.getElementById("bundle").textContent = bundleUrl.pathname;

let opened = null; // the bundle, opened once

async function fetchBytes(name) {
  const response = await fetch(new URL(name, bundleUrl));
  if (!response.ok) throw Object.assign(new Error(`${name}: HTTP ${response.status}`), { code: "ENOENT" });
  return new Uint8Array(await response.arrayBuffer());
}

async function runOnce({ text, ids, maxNewTokens }) {
  const started = performance.now();
  statusEl.textContent = "loading the bundle...";
  opened ??= await openBundle(ort, fetchBytes, { sessionOptions: { executionProviders: ["wasm"] } });
  statusEl.textContent = "running...";
  let partial = [];
  const result = await runRequest(ort, opened, {
    text,
    ids,
    maxNewTokens,
    onToken: (token) => {
      partial.push(token);
      resultEl.textContent = `${partial.length} tokens...`;
    },
  });
  const runtime = `onnxruntime-web ${ort.env.versions.web ?? ort.env.versions.common} (wasm), ${navigator.userAgent}`;
  statusEl.textContent = `${formatResult(result).split("\n")[0].slice(0, 200)}  (${Math.round(performance.now() - started)} ms)`;
  return { ...result, runtime };
}

function show(payload, status) {
  resultEl.textContent = JSON.stringify(payload);
  resultEl.dataset.status = status;
  document.title = `edgeformer: ${status}`;
  if (params.get("report") === "1") {
    return fetch("/result", { method: "POST", body: JSON.stringify({ status, ...payload }) });
  }
}

async function go(request) {
  try {
    await show(await runOnce(request), "done");
  } catch (err) {
    statusEl.textContent = `error: ${err.message}`;
    await show({ error: `${err.name}: ${err.message}` }, "error");
  }
}

function request(text, idsText, maxText) {
  const ids = idsText ? idsText.split(",").map((s) => Number(s.trim())) : null;
  return { text: text ?? "", ids, maxNewTokens: Number(maxText ?? 32) };
}

document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  go(request(form.get("text"), form.get("ids"), form.get("max_new_tokens")));
});

document.getElementById("text").value = params.get("text") ?? "";
document.getElementById("ids").value = params.get("ids") ?? "";
document.getElementById("max").value = params.get("max_new_tokens") ?? "32";
if (params.has("text") || params.has("ids")) {
  go(request(params.get("text"), params.get("ids"), params.get("max_new_tokens")));
}

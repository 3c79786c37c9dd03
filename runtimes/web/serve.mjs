#!/usr/bin/env node
// A tiny static server for the web sample, on 127.0.0.1 only:
//
//   node serve.mjs BUNDLE_DIR [--port 8000]
//   -> open http://127.0.0.1:8000/web/index.html?text=Return%20the
//
// It serves runtimes/ (the page, ../js/edgeformer.mjs, node_modules/onnxruntime-web) and the
// bundle directory under /bundle/. A page opened with ?report=1 POSTs its JSON result to /result;
// `startServer`'s onResult receives it (run_chromium.mjs reads the page's answer that way).

import { createServer } from "node:http";
import { createReadStream, statSync } from "node:fs";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

export const RUNTIMES = resolve(fileURLToPath(new URL("..", import.meta.url)));

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".ort": "application/octet-stream",
  ".data": "application/octet-stream",
  ".map": "application/json",
};
const MAX_RESULT = 64 * 1024 * 1024;

/** The file under `root` a URL path names, or null when it would leave `root` or is not a file. */
function inside(root, urlPath) {
  let path;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (path.includes("\0")) return null;
  const file = resolve(root, `.${path}`);
  if (file !== root && !file.startsWith(root + sep)) return null;
  try {
    return statSync(file).isFile() ? file : null;
  } catch {
    return null;
  }
}

/**
 * Serve runtimes/ and `bundleDir` (under /bundle/) on 127.0.0.1:`port` (0: any free port).
 * Resolves to {url, close()}; `onResult(text)` gets the body of each POST /result.
 */
export function startServer({ bundleDir, port = 0, onResult = () => {}, log = () => {} }) {
  const bundleRoot = resolve(bundleDir);
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    if (req.method === "POST" && url.pathname === "/result") {
      const chunks = [];
      let size = 0;
      req.on("data", (chunk) => {
        size += chunk.length;
        if (size > MAX_RESULT) req.destroy();
        else chunks.push(chunk);
      });
      req.on("end", () => {
        res.writeHead(204).end();
        onResult(Buffer.concat(chunks).toString("utf-8"));
      });
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
      return;
    }
    const file = url.pathname.startsWith("/bundle/")
      ? inside(bundleRoot, url.pathname.slice("/bundle".length))
      : inside(RUNTIMES, url.pathname);
    log(`${req.method} ${url.pathname} ${file ? 200 : 404}`);
    if (!file) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "cache-control": "no-store",
    });
    if (req.method === "HEAD") res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => {
      const { port: bound } = server.address();
      done({ url: `http://127.0.0.1:${bound}`, close: () => new Promise((closed) => server.close(closed)), server });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const at = args.indexOf("--port");
  const port = at >= 0 ? Number(args.splice(at, 2)[1]) : 8000;
  if (args.length !== 1 || !Number.isInteger(port)) {
    console.error("usage: node serve.mjs BUNDLE_DIR [--port 8000]");
    process.exit(2);
  }
  const { url } = await startServer({
    bundleDir: args[0],
    port,
    onResult: (text) => console.log(text),
    log: (line) => console.error(line),
  });
  console.error(`serving ${RUNTIMES} and the bundle ${resolve(args[0])} at /bundle/`);
  console.error(`open ${url}/web/index.html?text=Return%20the`);
}

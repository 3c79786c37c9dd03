#!/usr/bin/env node
// Run the web sample's page (index.html) in headless Chromium and print its result:
//
//   node run_chromium.mjs BUNDLE_DIR "Return the" --json [--max-new-tokens N] [--ids 1,2,3]
//                         [--chromium PATH] [--timeout SECONDS]
//
// It serves runtimes/ and the bundle on 127.0.0.1 (serve.mjs), opens
// /web/index.html?text=...&report=1 in `chromium --headless=new`, waits for the page to POST its
// JSON result, closes Chromium and prints the result (JSON with --json). The browser is found as
// --chromium, $CHROMIUM, or chromium / chromium-browser / google-chrome on the PATH.
// Exit codes: 0 done, 1 the page reported an error or Chromium failed, 2 a usage mistake.

import { spawn } from "node:child_process";
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

import { parseArgs } from "../js/cli.mjs";
import { formatResult } from "../js/edgeformer.mjs";
import { startServer } from "./serve.mjs";

const NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

export function findChromium(given) {
  if (given) return given;
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    for (const name of NAMES) {
      try {
        accessSync(join(dir, name), constants.X_OK);
        return join(dir, name);
      } catch {
        // not here
      }
    }
  }
  return null;
}

function takeOption(argv, flag) {
  const at = argv.indexOf(flag);
  if (at < 0) return null;
  if (at + 1 >= argv.length) throw new Error(`${flag} needs a value`);
  return argv.splice(at, 2)[1];
}

async function mainChromium(argv) {
  let args;
  let chromium;
  let timeout;
  try {
    chromium = findChromium(takeOption(argv, "--chromium"));
    timeout = Number(takeOption(argv, "--timeout") ?? 120);
    if (!(timeout > 0)) throw new Error("--timeout must be a positive number of seconds");
    args = parseArgs(argv);
  } catch (e) {
    console.error(`usage: node run_chromium.mjs BUNDLE_DIR [TEXT] [--ids 1,2,3] [--max-new-tokens N] [--json]
                             [--chromium PATH] [--timeout SECONDS]\nerror: ${e.message}`);
    return 2;
  }
  if (!chromium) {
    console.error(`error: no Chromium found (tried ${NAMES.join(", ")} on the PATH); give --chromium PATH`);
    return 2;
  }
  const [dir, text] = args.positional;
  if (!existsSync(join(dir, "manifest.json"))) {
    console.error(`error: ${dir} is not a bundle (no manifest.json)`);
    return 2;
  }

  let deliver;
  const answered = new Promise((done) => (deliver = done));
  const server = await startServer({ bundleDir: dir, onResult: deliver });
  const query = new URLSearchParams({ report: "1", max_new_tokens: String(args.maxNewTokens) });
  if (args.ids) query.set("ids", args.ids.join(","));
  else query.set("text", text ?? "");
  const page = `${server.url}/web/index.html?${query}`;

  const profile = mkdtempSync(join(tmpdir(), "edgeformer-chromium-"));
  const flags = [
    "--headless=new",
    "--no-sandbox", // root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking", // no calls home: a closed network refuses them, many at a time
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    `--user-data-dir=${profile}`,
    page,
  ];
  const browser = spawn(chromium, flags, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  browser.stderr.on("data", (chunk) => {
    log = (log + chunk).slice(-4000);
  });
  const exited = new Promise((done) => browser.once("exit", (code, signal) => done({ code, signal })));
  const spawnFailed = new Promise((done) => browser.once("error", (e) => done({ error: e.message })));
  let timer;
  const timedOut = new Promise((done) => (timer = setTimeout(() => done({ timeout: true }), timeout * 1000)));

  const outcome = await Promise.race([answered.then((body) => ({ body })), exited, spawnFailed, timedOut]);
  clearTimeout(timer);
  try {
    process.kill(-browser.pid, "SIGKILL"); // Chromium and its helper processes (one process group)
  } catch {
    // already gone
  }
  await server.close();
  rmSync(profile, { recursive: true, force: true });

  if (outcome.body === undefined) {
    const why = outcome.timeout
      ? `no result from the page within ${timeout} s`
      : outcome.error
        ? `could not start ${chromium}: ${outcome.error}`
        : `Chromium exited (code ${outcome.code}, signal ${outcome.signal}) before the page answered`;
    console.error(`error: ${why}\n--- Chromium's last output ---\n${log}`);
    return 1;
  }
  const { status, ...result } = JSON.parse(outcome.body);
  if (status !== "done") {
    console.error(`error: the page failed: ${result.error}`);
    return 1;
  }
  console.log(args.json ? JSON.stringify(result) : formatResult(result));
  return 0;
}

process.exitCode = await mainChromium(process.argv.slice(2));

"use strict";
// rethread from Node: the binary of this platform's package (@rethread/<os>-<arch>), and start().
const { spawn } = require("node:child_process");
const net = require("node:net");
const path = require("node:path");

/** The path of the rethread binary for this platform. */
function binaryPath() {
  const pkg = `@rethread/${process.platform}-${process.arch}`;
  try {
    return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), "bin", "rethread");
  } catch {
    throw new Error(`rethread: no binary for ${process.platform}-${process.arch} (${pkg} is not installed)`);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function flags(settings) {
  const args = [];
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined || value === null) continue;
    const flag = "--" + key.replace(/_/g, "-").replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
    for (const v of Array.isArray(value) ? value : [value]) args.push(flag, String(v));
  }
  return args;
}

/**
 * Starts rethread in front of `upstream` on a free local port and resolves once it serves.
 * Other options are rethread's flags (`fallbackRetries: 0` or `fallback_retries: 0`).
 */
async function start({ upstream = "https://api.openai.com", timeoutMs = 10000, ...settings } = {}) {
  const port = await freePort();
  const args = ["--listen", `127.0.0.1:${port}`, "--upstream", upstream, ...flags(settings)];
  const child = spawn(binaryPath(), args, { stdio: ["ignore", "ignore", "pipe"] });
  let output = "";
  child.stderr.on("data", (d) => {
    output = (output + d.toString()).slice(-4000);
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  process.once("exit", () => child.kill("SIGKILL"));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rethread exited with ${child.exitCode}:\n${output}`);
    try {
      const answer = await fetch(`${url}/healthz`);
      if (answer.ok) break;
    } catch {}
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`rethread did not answer /healthz within ${timeoutMs} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url, baseURL: `${url}/v1`, port, stop, output: () => output };
}

exports.start = start;
exports.binaryPath = binaryPath;

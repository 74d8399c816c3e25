#!/usr/bin/env node
"use strict";
// `npx rethread …`: runs this platform's binary with the same arguments and exit status.
const { spawnSync } = require("node:child_process");
const { binaryPath } = require("../index.js");

const result = spawnSync(binaryPath(), process.argv.slice(2), { stdio: "inherit" });
if (result.error) {
  console.error(`rethread: ${result.error.message}`);
  process.exit(1);
}
process.exit(result.status === null ? 1 : result.status);

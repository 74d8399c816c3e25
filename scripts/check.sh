#!/usr/bin/env bash
# What a contributor runs before pushing: formatting, lints, the import layers, and the whole
# test suite (the README's test command). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The layer order of ARCHITECTURE.md: no circle, no import upwards (the tool lives beside the
# repository in the project's shared folder; skipped where it is absent).
layers=main,server,proxy,tools,app,ledger,capture,forward,models,upstream_store,config,metrics,tenant,repair,error
if [ -f ../shared/tools/imports.py ]; then
  echo "== import layers"
  out=$(python3 ../shared/tools/imports.py src --layers "$layers")
  echo "$out" | tail -1
  echo "$out" | grep -q " 0 problems" || { echo "$out"; exit 1; }
fi
echo "== cargo test"
cargo test --workspace

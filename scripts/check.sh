#!/usr/bin/env bash
# What a contributor runs before pushing: formatting, lints, the import layers, and the whole
# test suite (the README's test command). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Under CI=true a missing tool is a failure, not a skip.
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || { echo "cargo $tool is not installed (rustup component add ${tool/fmt/rustfmt})"; exit 1; }
done
echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The layer order of ARCHITECTURE.md: no circle, no import upwards. tests/layers.rs checks it in
# the test suite (always, CI included); the project's shared tool, where it sits beside the
# repository, also draws the whole graph.
layers=$(grep -o -- '--layers [a-z_,]*' ARCHITECTURE.md | head -1 | cut -d' ' -f2)
if [ -f ../shared/tools/imports.py ]; then
  echo "== import layers"
  out=$(python3 ../shared/tools/imports.py src --layers "$layers")
  echo "$out" | tail -1
  echo "$out" | grep -q " 0 problems" || { echo "$out"; exit 1; }
fi
echo "== cargo test"
cargo test --workspace

#!/usr/bin/env bash
# Installs what tests/e2e/sdk.rs runs: the Node SDK (tests/sdk/node_modules, from package-lock.json)
# and the Python SDK plus the Agents SDK (tests/sdk/.venv, from requirements.txt).
# Idempotent: safe to run again; it brings both back to the pinned versions.
# Needs node/npm (Node >= 20) and python3 (>= 3.10, with the venv module) on PATH;
# PYTHON=/path/to/python3 picks another interpreter.
set -euo pipefail
cd "$(dirname "$0")/../tests/sdk"

python=${PYTHON:-python3}
for tool in node npm "$python"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-sdk-deps: '$tool' is not on PATH" >&2
    exit 1
  fi
done

echo "install-sdk-deps: node $(node --version), npm $(npm --version 2>/dev/null)"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

# A venv whose interpreter no longer runs (Python upgraded or moved) is rebuilt.
if [ -d .venv ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  echo "install-sdk-deps: rebuilding the broken .venv"
  rm -rf .venv
fi
if [ ! -d .venv ]; then
  "$python" -m venv .venv
fi
echo "install-sdk-deps: $(.venv/bin/python --version)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -c 'import openai, agents; print("install-sdk-deps: openai", openai.__version__, "/ openai-agents", agents.__version__)'

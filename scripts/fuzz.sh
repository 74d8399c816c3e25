#!/usr/bin/env bash
# Coverage-guided fuzzing of the request parser/splicer and of capture, each for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain is allowed the sanitizer
# flags libFuzzer needs with RUSTC_BOOTSTRAP=1. New corpus entries land in fuzz/corpus; a crash
# lands in fuzz/artifacts and must become a regression test before it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
for target in request_repair capture_chunks chunked_body; do
  echo "fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
done

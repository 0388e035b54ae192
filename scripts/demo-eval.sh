#!/usr/bin/env bash
# Runs `kefu eval` on the project's own demo set: the built-in demo answer
# library (src/demo/answers.jsonl) as the corpus, each answer's variants as
# extra entries of its group, and tests/fixtures/demo_questions.jsonl as
# the queries (out-of-scope ones as --oos). Extra arguments go to kefu eval,
# e.g. `scripts/demo-eval.sh --sweep` or `scripts/demo-eval.sh --retrieval dense`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
with open(f"{out}/corpus.jsonl", "w") as c:
    for line in open("src/demo/answers.jsonl", encoding="utf-8"):
        a = json.loads(line)
        if a.get("status", "published") != "published":
            continue
        c.write(json.dumps({"id": a["id"], "question": a["question"], "answer": a["answer"], "group": a["id"]}, ensure_ascii=False) + "\n")
        for i, v in enumerate(a.get("variants", [])):
            c.write(json.dumps({"id": f"{a['id']}#v{i}", "question": v, "answer": "", "group": a["id"]}, ensure_ascii=False) + "\n")
with open(f"{out}/queries.jsonl", "w") as q, open(f"{out}/oos.jsonl", "w") as o:
    for line in open("tests/fixtures/demo_questions.jsonl", encoding="utf-8"):
        t = json.loads(line)
        row = {"qid": t["qid"], "query": t["question"], "relevant_ids": [t["expected_id"]] if t["expected_id"] else []}
        (q if t["expected_id"] else o).write(json.dumps(row, ensure_ascii=False) + "\n")
PY
bin=target/release/kefu
[ -x "$bin" ] || cargo build --release --bin kefu
"$bin" eval --corpus "$out/corpus.jsonl" --queries "$out/queries.jsonl" --oos "$out/oos.jsonl" "$@"

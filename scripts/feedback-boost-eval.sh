#!/usr/bin/env bash
# Measures the optional feedback boost (`kefu serve --feedback-boost W`)
# before anyone turns it on, end to end through the real server:
#
#   1. the demo library is imported into a throwaway data directory;
#   2. half of tests/fixtures/demo_questions.jsonl (the "replay" half) is sent
#      to `kefu serve` with the boost off, and every shown answer among the
#      first FEEDBACK_DEPTH gets simulated feedback through POST /v1/feedback:
#      helpful iff it is the question's expected answer (out-of-scope
#      questions: never helpful);
#   3. the other half (the "measure" half, in-scope questions only) is asked
#      with the boost off, then, after a restart on the same data, with each
#      weight; top-1 accuracy (the first result is the expected answer) is
#      printed for each.
#
# Two folds: odd lines replay and even lines measure, then the reverse.
#
#   scripts/feedback-boost-eval.sh [W ...]     # default weights: 0.02 0.05 0.1
#
# Environment: FEEDBACK_DEPTH (default 3: feedback on the first 3 shown
# answers), TOP_K (default 5), KEFU_MODEL / KEFU_MODELS_DIR as for kefu,
# KEFU_NO_BUILD=1 to use the built binary as it is (CARGO_TARGET_DIR is
# honoured).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/kefu"
if [ -z "${KEFU_NO_BUILD:-}" ]; then
  cargo build --release --bin kefu
fi
command -v python3 >/dev/null || { echo "feedback-boost-eval: python3 is needed" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" import --demo --data-dir "$work/base" >/dev/null
python3 - "$bin" "$work" "${@:-0.02 0.05 0.1}" <<'PY'
import json, os, shutil, socket, subprocess, sys, time, urllib.error, urllib.request

kefu, work = sys.argv[1], sys.argv[2]
weights = [w for arg in sys.argv[3:] for w in arg.split()]
depth = int(os.environ.get("FEEDBACK_DEPTH", "3"))
top_k = int(os.environ.get("TOP_K", "5"))
questions = [json.loads(l) for l in open("tests/fixtures/demo_questions.jsonl", encoding="utf-8") if l.strip()]

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def call(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")

class Server:
    def __init__(self, data, boost):
        self.base = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [kefu, "serve", "--addr", self.base[7:], "--data-dir", data,
             "--feedback-boost", str(boost)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.time()
        while True:
            try:
                if call(self.base, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() - started > 300:
                raise SystemExit("kefu serve did not become ready")
            time.sleep(0.2)
    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)

def ask(base, q):
    status, r = call(base, "/v1/recommend", {"question": q["question"], "top_k": top_k})
    assert status == 200, r
    return r

def top1(base, half):
    firsts = {}
    for q in half:
        r = ask(base, q)
        firsts[q["qid"]] = r["results"][0]["answer_id"] if r["results"] else None
    return firsts

rows = []
for fold, (replay, measure) in enumerate([(questions[0::2], questions[1::2]), (questions[1::2], questions[0::2])], 1):
    data = os.path.join(work, f"fold{fold}")
    shutil.copytree(os.path.join(work, "base"), data)
    measure = [q for q in measure if q["expected_id"]]
    s = Server(data, 0)
    sent = helpful = 0
    for q in replay:
        r = ask(s.base, q)
        for res in r["results"][:depth]:
            ok = res["answer_id"] == q["expected_id"]
            status, body = call(s.base, "/v1/feedback", {"request_id": r["request_id"], "answer_id": res["answer_id"], "helpful": ok})
            assert status == 201, body
            sent += 1
            helpful += ok
    off = top1(s.base, measure)
    s.stop()
    results = {"0": off}
    for w in weights:
        s = Server(data, w)
        results[w] = top1(s.base, measure)
        s.stop()
    expected = {q["qid"]: q["expected_id"] for q in measure}
    acc = {w: sum(f[qid] == expected[qid] for qid in expected) / len(expected) for w, f in results.items()}
    changed = {w: sum(results[w][qid] != off[qid] for qid in expected) for w in weights}
    rows.append((fold, len(replay), sent, helpful, len(expected), acc, changed, results, expected))
    print(f"fold {fold}: replayed {len(replay)} questions, {sent} feedback ({helpful} helpful); "
          f"measured {len(expected)} in-scope questions")
    print(f"  top-1 boost off: {acc['0']:.4f}")
    for w in weights:
        print(f"  top-1 boost {w}: {acc[w]:.4f}  ({changed[w]} top answers changed)")

n = sum(r[4] for r in rows)
print(f"both folds ({n} measured questions, feedback on the first {depth} of top {top_k}):")
for w in ["0"] + weights:
    hits = sum(sum(r[7][w][qid] == r[8][qid] for qid in r[8]) for r in rows)
    print(f"  boost {w if w != '0' else 'off'}: top-1 {hits / n:.4f} ({hits}/{n})")
PY

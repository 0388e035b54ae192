#!/usr/bin/env bash
# Load test of `kefu serve`: POST /v1/recommend with the real questions of the demo test set
# (tests/fixtures/demo_questions.jsonl, cycled) from wrk at concurrency 1, 4 and 16, first on
# the idle service over the demo library, then again while a full reindex of a 10x copy of the
# demo library runs in the same service.
#
#   scripts/loadtest.sh [--duration SECONDS] [--concurrency "1 4 16"] [--copies N]
#                       [--port PORT] [--timeout SECONDS] [--keep]
#
# Prints one table: phase, concurrency, requests/s, p50 and p99 latency (ms), non-2xx
# responses (429 "queue full" counts as an error) and socket errors (connect, read, write,
# timeout); then the full reindex's duration and whether it was still running at the end of
# every phase under it (a line says so if it finished early); and the server's peak RSS (VmHWM)
# after the idle phases (the model and the demo library) and at the end.
#
# Then the load targets, against offline figures measured by the same binary on the same
# machine in the same run (the machine's speed drifts by up to 2x over a day, so figures
# from another run are no baseline): `kefu model bench` (the workloads of
# scripts/bench-vs-c-engine.sh: one short query, 32 short queries in one call; and each of
# the load's own questions alone, once) runs three times, before the server starts, between
# the idle and the reindex phases (server idle), and after the server has stopped; their
# medians are the baseline: p50 at concurrency 1 over the latency of one of the same
# questions embedded alone (target <= 1.3: what the index, store and HTTP add; shown also
# over one short query), requests/s at concurrency 16 over the 32-query batch throughput
# (>= 0.8), p99 over p50 at concurrency 16 (<= 10), errors (0).
#
# What it does: builds kefu (release; KEFU_BIN=path uses that binary instead), fetches the
# model if missing (scripts/fetch-model.sh), installs wrk with apt-get if missing, imports the
# demo library (`kefu import --demo`) into a throwaway data directory, serves it on a free
# loopback port (or --port), warms up, runs the idle phases; then stores N-1 more copies of every demo answer through POST /v1/answers
# (distinct ids; each text gets a " (copy k)" suffix so that every text really is embedded
# again rather than deduplicated), so the library is N times the demo (default N = 10),
# starts POST /v1/reindex {"mode": "full"} and runs the same phases while it runs, then waits
# for it to finish. Each phase lasts --duration seconds (default 30); wrk runs one thread (it
# shares the machine's cores with the server) and a --timeout of 30 s per request. KEFU_*
# variables in the environment reach the server (e.g. KEFU_QUEUE_CAPACITY). The server, wrk
# and the data directory are removed on exit (--keep keeps the data directory and logs).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

usage() { sed -n '2,37s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "error: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

duration=30
concurrency="1 4 16"
copies=10
port=
timeout=30
keep=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) [[ $# -ge 2 ]] || die "$1 needs a value"; duration=$2; shift ;;
        --concurrency) [[ $# -ge 2 ]] || die "$1 needs a value"; concurrency=$2; shift ;;
        --copies) [[ $# -ge 2 ]] || die "$1 needs a value"; copies=$2; shift ;;
        --port) [[ $# -ge 2 ]] || die "$1 needs a value"; port=$2; shift ;;
        --timeout) [[ $# -ge 2 ]] || die "$1 needs a value"; timeout=$2; shift ;;
        --keep) keep=1 ;;
        -h|--help) usage 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
for v in "$duration" "$copies" "$timeout" $concurrency; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "--duration, --copies, --timeout and --concurrency take positive integers"
done
[[ -z "$port" || "$port" =~ ^[1-9][0-9]*$ ]] || die "--port takes a port number"

if ! command -v wrk >/dev/null; then
    say "installing wrk (apt-get)"
    [[ $(id -u) -eq 0 ]] || die "wrk is missing: install it (apt-get install wrk) or run as root"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi
if [[ -n "${KEFU_BIN:-}" ]]; then
    kefu=$(realpath "$KEFU_BIN")
    [[ -x "$kefu" ]] || die "KEFU_BIN=$KEFU_BIN is not an executable"
    echo "== using $kefu (KEFU_BIN; not building)" >&2
else
    say "building kefu (release)"
    cargo build --release --bin kefu >&2
    kefu=$repo/target/release/kefu
fi
# Which code ran: the checkout as it was built (read now, not after a run that may outlast an
# edit), or the binary KEFU_BIN named, which may have been built from any commit.
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
[[ -z "${KEFU_BIN:-}" ]] || commit="KEFU_BIN=$kefu; checkout at $commit"
say "model"
KEFU_BIN=$kefu scripts/fetch-model.sh multilingual-e5-small >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kefu-loadtest.XXXXXX")
server_pid=
wrk_pid=
cleanup() {
    local rc=$?
    if [[ -n "$wrk_pid" ]]; then kill "$wrk_pid" 2>/dev/null || true; fi
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -f "$tmp/serve.log" ]]; then
        echo "--- last lines of the server log:" >&2
        tail -n 20 "$tmp/serve.log" >&2
    fi
    if [[ -n "$keep" ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

data=$tmp/data
model_flags=(--model multilingual-e5-small --models-dir "$repo/models")

# Read before this script's own work (the offline baseline) loads the machine.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

python3 "$repo/scripts/bench-texts.py" "$repo" "$tmp/texts.json"
# The requests, one JSON body per real question (bodies.jsonl, for wrk); and the same
# questions, in the same order, as a texts file for the offline baseline (served.json).
served_n=$(python3 - "$repo/tests/fixtures/demo_questions.jsonl" "$tmp/texts.json" \
    "$tmp/bodies.jsonl" "$tmp/served.json" <<'EOF'
import json, sys
qs = [json.loads(l)["question"] for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
with open(sys.argv[3], "w", encoding="utf-8") as out:
    for q in qs:
        out.write(json.dumps({"question": q, "top_k": 5}, ensure_ascii=False) + "\n")
answers = json.load(open(sys.argv[2], encoding="utf-8"))["answers"]
json.dump({"queries": qs, "answers": answers}, open(sys.argv[4], "w", encoding="utf-8"), ensure_ascii=False)
print(f"      {len(qs)} questions", file=sys.stderr)
print(len(qs))
EOF
)
offline() {  # offline LABEL: `kefu model bench` on the benchmark texts, then on the load's questions
    "$kefu" model bench --texts "$tmp/texts.json" --batch 32 --repetitions 10 --warmup 2 \
        "${model_flags[@]}" > "$tmp/offline.$1.json"
    "$kefu" model bench --texts "$tmp/served.json" --batch 1 --repetitions 1 --warmup 2 \
        --single-repetitions "$served_n" "${model_flags[@]}" > "$tmp/offline-served.$1.json"
    python3 -c 'import json, sys; r, s = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print("      offline: one short query %.2f ms, 32 short queries %.1f /s, one of the load test questions %.2f ms" % (r["single_query"]["median_ms"], r["batch_queries"]["throughput_per_s"], s["single_query"]["median_ms"]))' \
        "$tmp/offline.$1.json" "$tmp/offline-served.$1.json" >&2
}
say "offline baseline 1/3 (kefu model bench, before the server starts)"
offline before
say "importing the demo library into $data"
"$kefu" import --demo --data-dir "$data" "${model_flags[@]}" >&2

[[ -n "$port" ]] || port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
say "serving on $base"
"$kefu" serve --addr "127.0.0.1:$port" --data-dir "$data" "${model_flags[@]}" > "$tmp/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
    kill -0 "$server_pid" 2>/dev/null || die "kefu serve exited"
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/readyz" || true) == 200 ]] && break
    sleep 0.2
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "$base/readyz") == 200 ]] || die "kefu serve not ready after 120 s"
demo_answers=$(curl -sf "$base/v1/index" | python3 -c 'import json, sys; print(json.load(sys.stdin)["answers"])')

cat > "$tmp/recommend.lua" <<'EOF'
-- POST /v1/recommend, cycling through the JSON bodies in the file given after `--`;
-- counts non-2xx responses (and 429s among them) in every thread, and prints one
-- machine-readable line at the end.
local threads = {}

function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
end

function init(args)
    reqs = {}
    for line in io.lines(args[1]) do
        if #line > 0 then
            reqs[#reqs + 1] = wrk.format("POST", "/v1/recommend",
                { ["Content-Type"] = "application/json" }, line)
        end
    end
    -- Threads start at different questions.
    idx = (tid * 37) % #reqs
    non2xx = 0
    s429 = 0
end

function request()
    idx = idx % #reqs + 1
    return reqs[idx]
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
        if status == 429 then s429 = s429 + 1 end
    end
end

function done(summary, latency, requests)
    local n, n429 = 0, 0
    for _, t in ipairs(threads) do
        n = n + t:get("non2xx")
        n429 = n429 + t:get("s429")
    end
    local e = summary.errors
    io.write(string.format(
        "KEFU_RESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, " ..
        "\"non2xx\": %d, \"status_429\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d}\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        n, n429, e.connect, e.read, e.write, e.timeout))
end
EOF

results=$tmp/results.jsonl
: > "$results"
run_wrk() {  # run_wrk PHASE CONCURRENCY SECONDS [record]
    local out=$tmp/wrk.$1.$2.txt line
    # In the background, so that a signal to this script is handled at once (cleanup kills wrk).
    wrk -t1 -c"$2" -d"$3s" --timeout "${timeout}s" -s "$tmp/recommend.lua" \
        "$base/v1/recommend" -- "$tmp/bodies.jsonl" > "$out" 2>&1 &
    wrk_pid=$!
    wait "$wrk_pid" || { cat "$out" >&2; die "wrk failed"; }
    wrk_pid=
    line=$(grep '^KEFU_RESULT ' "$out" | tail -n1) || { cat "$out" >&2; die "wrk printed no result"; }
    if [[ "${4:-}" == record ]]; then
        python3 -c 'import json, sys; r = json.loads(sys.argv[3]); r.update(phase=sys.argv[1], concurrency=int(sys.argv[2])); print(json.dumps(r))' \
            "$1" "$2" "${line#KEFU_RESULT }" >> "$results"
        python3 -c 'import json, sys; r = json.loads(sys.argv[1])
print("      %d requests, %.1f/s, p50 %.1f ms, p99 %.1f ms, non-2xx %d" % (r["requests"], r["requests"] / max(r["duration_us"], 1) * 1e6, r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["non2xx"]))' \
            "${line#KEFU_RESULT }" >&2
    fi
}

say "warm-up (5 s at concurrency 4, not recorded)"
run_wrk warmup 4 5
for c in $concurrency; do
    say "phase idle, concurrency $c, ${duration} s"
    run_wrk idle "$c" "$duration" record
done

vmhwm() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$server_pid/status"; }
rss_idle=$(vmhwm)
say "server peak RSS after the idle phases: $rss_idle MB"
say "offline baseline 2/3 (the server idle)"
offline between

# The 10x library: N-1 more copies of every demo answer, stored through the API.
say "storing $((copies - 1)) more copies of the demo library through POST /v1/answers"
for ((k = 2; k <= copies; k++)); do
    python3 - "$repo/src/demo/answers.jsonl" "$k" > "$tmp/copy.json" <<'EOF'
import json, sys
k = int(sys.argv[2])
answers = []
for line in open(sys.argv[1], encoding="utf-8"):
    if not line.strip():
        continue
    a = json.loads(line)
    a["id"] = f"{a['id']}.copy{k}"
    suffix = f" (copy {k})"
    a["question"] += suffix
    a["answer"] += suffix
    a["variants"] = [v + suffix for v in a.get("variants", [])]
    answers.append(a)
print(json.dumps({"answers": answers}, ensure_ascii=False))
EOF
    code=$(curl -s -o "$tmp/copy.out" -w '%{http_code}' "$base/v1/answers" \
        -H 'content-type: application/json' --data-binary "@$tmp/copy.json")
    [[ "$code" == 200 ]] || { cat "$tmp/copy.out" >&2; die "POST /v1/answers (copy $k) answered $code"; }
done
index_json=$(curl -sf "$base/v1/index")
answers_total=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["answers"])' "$index_json")
say "library: $answers_total answers; starting a full reindex"

code=$(curl -s -o "$tmp/reindex.out" -w '%{http_code}' "$base/v1/reindex" \
    -H 'content-type: application/json' -d '{"mode": "full"}')
[[ "$code" == 202 ]] || { cat "$tmp/reindex.out" >&2; die "POST /v1/reindex answered $code"; }
job=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["job_id"])' "$tmp/reindex.out")
reindex_started=$(date +%s.%N)
job_field() {  # job_field FIELD...: the job's fields, space-separated
    curl -sf "$base/v1/reindex/$job" | python3 -c 'import json, sys; j = json.load(sys.stdin); print(" ".join(str(j.get(f)) for f in sys.argv[1:]))' "$@"
}
for _ in $(seq 100); do
    [[ $(job_field status) == queued ]] || break
    sleep 0.1
done
early=()
for c in $concurrency; do
    read -r status done_n total_n <<< "$(job_field status "done" total)"
    say "phase reindex, concurrency $c, ${duration} s (reindex $status, $done_n/$total_n texts)"
    [[ "$status" == running ]] || early+=("before the phase at concurrency $c (status $status)")
    run_wrk reindex "$c" "$duration" record
    status=$(job_field status)
    [[ "$status" == running ]] || early+=("during the phase at concurrency $c (status $status)")
done
say "waiting for the reindex to finish"
last=0
while :; do
    read -r status done_n total_n <<< "$(job_field status "done" total)"
    [[ "$status" == queued || "$status" == running ]] || break
    now=$(date +%s)
    if ((now - last >= 15)); then echo "      $status: $done_n/$total_n texts" >&2; last=$now; fi
    sleep 1
done
reindex_wall=$(python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$reindex_started")
job_json=$(curl -sf "$base/v1/reindex/$job")

rss_end=$(vmhwm)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=
say "offline baseline 3/3 (the server stopped)"
offline after
python3 - "$results" "$job_json" "$reindex_wall" "$answers_total" "$copies" "$duration" \
    "$demo_answers" "$timeout" "$load_before" "$load_after" "$commit" "$rss_idle" "$rss_end" \
    "$tmp" "${early[@]}" <<'EOF'
import json, re, statistics, sys
from datetime import datetime
results, job, wall, answers, copies, duration, demo, timeout, before, after, commit, rss_idle, rss_end, tmp = sys.argv[1:15]
early = sys.argv[15:]
job = json.loads(job)
rows = [json.loads(l) for l in open(results) if l.strip()]

def ts(s):  # RFC 3339 with up to nanoseconds -> datetime
    if not s:
        return None
    s = re.sub(r"(\.\d{6})\d+", r"\1", s).replace("Z", "+00:00")
    return datetime.fromisoformat(s)

print(f"kefu serve ({commit}), POST /v1/recommend with the demo test set's questions (top_k 5); wrk, 1 thread, "
      f"{duration} s per phase, {timeout} s request timeout; idle: the demo library ({demo} answers)")
print()
print(f"{'phase':<16} {'concurrency':>11} {'requests/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8} {'socket errors':>14}")
for r in rows:
    rps = r["requests"] / max(r["duration_us"], 1) * 1e6
    sock = r["connect"] + r["read"] + r["write"] + r["timeout"]
    phase = "idle" if r["phase"] == "idle" else "during reindex"
    print(f"{phase:<16} {r['concurrency']:>11} {rps:>11.1f} {r['p50_us'] / 1e3:>9.1f} {r['p99_us'] / 1e3:>9.1f} "
          f"{r['non2xx']:>8} {sock:>14}")
n429 = sum(r["status_429"] for r in rows)
if n429:
    print(f"of the non-2xx responses, {n429} were 429 (queue full)")
timeouts = sum(r["timeout"] for r in rows)
if timeouts:
    print(f"of the socket errors, {timeouts} were timeouts (no answer within the per-request timeout)")
start, end = ts(job.get("started_at")), ts(job.get("finished_at"))
took = f"{(end - start).total_seconds():.1f} s" if start and end else f"about {wall} s (wall clock)"
print(f"full reindex of {answers} answers ({copies}x the demo library, {job.get('total')} texts embedded): "
      f"{job.get('status')} in {took}")
if job.get("error"):
    print(f"reindex error: {job['error']}")
if early:
    print("the reindex was NOT running for the whole of every phase under it: it finished " + "; ".join(early))
else:
    print(f"the reindex was running from the start to the end of every phase under it ({duration} s each)")
print(f"server peak RSS (VmHWM): {rss_idle} MB after the idle phases (model + demo library), "
      f"{rss_end} MB at the end (after the {copies}x reindex)")
print(f"load average before {before}, after {after} (1, 5, 15 min; wrk and other processes share the cores)")

labels = ("before", "between", "after")
runs = [json.load(open(f"{tmp}/offline.{label}.json")) for label in labels]
served = [json.load(open(f"{tmp}/offline-served.{label}.json")) for label in labels]
one = [r["single_query"]["median_ms"] for r in runs]
own = [r["single_query"]["median_ms"] for r in served]
batch = [r["batch_queries"]["throughput_per_s"] for r in runs]
one_ms, own_ms, batch_s = statistics.median(one), statistics.median(own), statistics.median(batch)
print()
print("offline, the same binary in this run (kefu model bench; before the server, between the phases, after it):")
print("  one short query (scripts/bench-vs-c-engine.sh's 32, cycled): " + ", ".join(f"{v:.2f}" for v in one) + f" ms; median {one_ms:.2f} ms")
print(f"  one of this load's {served[0]['single_repetitions']} questions (each once): " + ", ".join(f"{v:.2f}" for v in own) + f" ms; median {own_ms:.2f} ms")
print("  32 short queries in one call: " + ", ".join(f"{v:.1f}" for v in batch) + f" /s; median {batch_s:.1f} /s")
print()
print(f"{'target':<60} {'idle':>10} {'during reindex':>15}")
def row(name, c, f, fmt, ok):
    cells = []
    for phase in ("idle", "reindex"):
        r = next((r for r in rows if r["phase"] == phase and r["concurrency"] == c), None)
        if r is None:
            cells.append("-")
        else:
            v = f(r)
            cells.append(format(v, fmt) + (" ok" if ok(v) else " MISS"))
    print(f"{name:<60} {cells[0]:>10} {cells[1]:>15}")
row("concurrency 1: p50 / one of the same questions <= 1.3x", 1,
    lambda r: r["p50_us"] / 1e3 / own_ms, ".3f", lambda v: v <= 1.3)
row("concurrency 1: p50 / one short query <= 1.3x", 1,
    lambda r: r["p50_us"] / 1e3 / one_ms, ".3f", lambda v: v <= 1.3)
row("concurrency 16: req/s / 32-query batch >= 0.8x", 16,
    lambda r: r["requests"] / max(r["duration_us"], 1) * 1e6 / batch_s, ".3f", lambda v: v >= 0.8)
row("concurrency 16: p99 / p50 <= 10x", 16,
    lambda r: r["p99_us"] / max(r["p50_us"], 1), ".2f", lambda v: v <= 10)
for c in sorted({r["concurrency"] for r in rows}):
    row(f"concurrency {c}: errors (non-2xx + socket) = 0", c,
        lambda r: r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"], "d", lambda v: v == 0)
EOF

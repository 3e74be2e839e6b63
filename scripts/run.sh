#!/usr/bin/env bash
# The main job on a fresh machine: set up (models, binary, demo data + classifier), then serve
# http://127.0.0.1:8080 (the call-taker page and the API). Extra arguments go to `triage serve`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --demo
TARGET="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$TARGET/release/triage" serve "$@"

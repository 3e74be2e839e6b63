#!/usr/bin/env bash
# Runs every test with the real models: sets up what the tests need (idempotent; quick once done),
# then the workspace's tests in the release profile (candle is ~20x slower unoptimised).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec cargo test --release --workspace "$@"

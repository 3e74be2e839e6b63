#!/usr/bin/env bash
# Runs every test with the real models and a real browser: sets up what the tests need (idempotent;
# quick once done), then the workspace's tests in the release profile (candle is ~20x slower
# unoptimised).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
# The call-taker page is tested in a real headless Chromium driven by chromedriver.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (apt) for the browser test" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver fonts-noto-cjk >/dev/null
  else
    echo "the browser test needs Chromium and chromedriver: apt-get install chromium chromium-driver fonts-noto-cjk" >&2
    exit 1
  fi
fi
cd "$ROOT"
exec cargo test --release --workspace "$@"

#!/usr/bin/env bash
# Side-by-side teacher forward benchmark: `arwkv bench teacher` and transformers on the same
# machine, same shapes, in one run. Usage: benches/teacher.sh [PYTHON] [-- extra shape flags]
# PYTHON defaults to $ARWKV_BENCH_PYTHON or python3 (needs torch + transformers, see
# tests/fixtures/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-${ARWKV_BENCH_PYTHON:-python3}}"; shift || true
[ "${1:-}" = "--" ] && shift
threads=$(nproc)
cargo build --release --locked -p arwkv --quiet
bin="${CARGO_TARGET_DIR:-target}/release/arwkv"
echo "# $(date -u +%F) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for shape in "--seq 128" "--seq 512" "--seq 2048" "--batch 4 --seq 256"; do
  # shellcheck disable=SC2086
  "$bin" bench teacher $shape "$@"
  # shellcheck disable=SC2086
  "$py" benches/teacher_torch.py --threads "$threads" $shape "$@"
done

#!/usr/bin/env bash
# Side-by-side WKV-7 CPU forward+backward: `arwkv bench wkv7` and a PyTorch token loop with autograd,
# same machine, same shapes, one run. Usage: benches/wkv7.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-${ARWKV_BENCH_PYTHON:-python3}}"
cargo build --release --locked -p arwkv --quiet
bin="${CARGO_TARGET_DIR:-target}/release/arwkv"
echo "# $(date -u +%F) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for shape in "--batch 1 --seq 128 --heads 4" "--batch 2 --seq 256 --heads 8"; do
  # shellcheck disable=SC2086
  "$bin" bench wkv7 $shape
  # shellcheck disable=SC2086
  "$py" benches/wkv7_torch.py --threads "$(nproc)" $shape
done

#!/usr/bin/env bash
# Side-by-side training-step throughput of stage 1 (align), stage 2 (kl), SFT and DPO on the embedded tiny teacher:
# `arwkv bench distill` and its PyTorch twin, same machine, same shapes, one run.
# Usage: benches/distill.sh [PYTHON]   (PYTHON needs torch and transformers, e.g. ~/.cache/arwkv-venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-${ARWKV_BENCH_PYTHON:-python3}}"
cargo build --release --locked -p arwkv --quiet
bin="${CARGO_TARGET_DIR:-target}/release/arwkv"
echo "# $(date -u +%F) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for stage in align kl sft dpo; do
  "$bin" bench distill --stage "$stage" --batch 8 --seq 128 2>/dev/null
  "$py" benches/distill_torch.py --stage "$stage" --batch 8 --seq 128 --threads "$(nproc)"
done

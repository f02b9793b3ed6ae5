#!/usr/bin/env bash
# Tests of arwkv-kernel over the real Jupyter protocol (jupyter_client / jupyter_kernel_test /
# nbclient from a venv outside the clone):
#   1. test_protocol.py — the jupyter_kernel_test suite and our protocol behaviour, on a plain Rust
#      kernel (ARWKV_KERNEL_NO_PRELUDE=1: seconds per cell);
#   2. test_arwkv_cells.py — cells against the preloaded arwkv: live LossPlot updates, an interrupted
#      training cell that keeps its model, an nbclient run that saves the final curve;
#   3. tests/notebooks/test_notebooks.py — every notebook of notebooks/ headless (`arwkv-kernel run`)
#      and in `jupyter execute`, two of them exported, built (release) and run with the notebook's
#      final metrics compared value for value;
#   4. tests/browser/test_live_plot.py — JupyterLab in headless Chromium (Debian's chromium, driven
#      by Playwright): notebook 02 run from the Run menu, the live plot's points read from the page.
#   `install`
#      pre-builds the prelude in ~/.cache/arwkv-kernel (cold: Burn at opt-level 2, tens of minutes on
#      2 cores; warm: seconds).
# Usage: tests/kernel/run.sh   (env: ARWKV_KERNEL_VENV, default ~/.cache/arwkv-jupyter-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${ARWKV_KERNEL_VENV:-$HOME/.cache/arwkv-jupyter-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import jupyter_kernel_test, nbclient, jupytext, jupyterlab, notebook, plotly, playwright" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/kernel/requirements.txt
fi
# The kernel binary as the README's `cargo test` builds it (kernel/tests/cli.rs makes that command
# build it), so after that command this is a no-op: a plain `cargo build -p arwkv-kernel` resolves
# other features for `arwkv`, Burn and rust-analyzer's crates and compiles them all a second time.
# One prelude for the CPU and the WGPU runs (Mesa lavapipe): built once, with `flex` and `wgpu`.
# ARWKV_KERNEL_FEATURES= (empty) runs the CPU half only.
export ARWKV_KERNEL_FEATURES="${ARWKV_KERNEL_FEATURES-wgpu}"
test_features=()
for f in wgpu cuda; do
  case ",$ARWKV_KERNEL_FEATURES," in *",$f,"*) test_features+=(--features "arwkv-tests/$f") ;; esac
done
cargo test --locked --workspace "${test_features[@]}" --no-run --quiet
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
export JUPYTER_PATH="$prefix/share/jupyter" JUPYTER_RUNTIME_DIR="$prefix/runtime"

echo "== protocol (plain Rust kernel)"
"$target/debug/arwkv-kernel" install --prefix "$prefix" --no-prebuild >/dev/null
"$venv/bin/jupyter" kernelspec list | grep -E "^\s+arwkv\s" || { echo "arwkv missing from jupyter kernelspec list" >&2; exit 1; }
ARWKV_KERNEL_NO_PRELUDE=1 "$venv/bin/python" -m unittest -v tests/kernel/test_protocol.py

echo "== arwkv cells (pre-building the prelude with features '${ARWKV_KERNEL_FEATURES}'; warm after the first run)"
"$target/debug/arwkv-kernel" install --prefix "$prefix" --features "$ARWKV_KERNEL_FEATURES"
"$venv/bin/python" -m unittest -v tests/kernel/test_arwkv_cells.py

echo "== protocol, the kernel as users get it (arwkv prelude loaded; jupyter_kernel_test's own timeouts)"
"$venv/bin/python" -m unittest -v tests/kernel/test_protocol.py

echo "== live plot in a real browser (JupyterLab + headless Chromium)"
"$venv/bin/python" -m unittest -v tests/browser/test_live_plot.py

echo "== notebooks (headless runner, jupyter execute, export → build → run)"
ARWKV_KERNEL_BIN="$target/debug/arwkv-kernel" \
  ARWKV_EXPORT_TARGET="${ARWKV_EXPORT_TARGET:-$target/notebook-export}" \
  PATH="$venv/bin:$PATH" "$venv/bin/python" -m unittest -v tests/notebooks/test_notebooks.py

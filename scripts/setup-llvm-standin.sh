#!/usr/bin/env bash
# Lets `--features cuda` / `rocm` build and link without network access.
#
# cubecl-cuda / cubecl-hip 0.11 always link cubecl-llvm, whose build script downloads a prebuilt
# LLVM 23.1 bundle unless one is installed under the per-user data directory. This script installs
# Debian's LLVM 22 and presents it as that bundle. Our `cuda` feature turns on cubecl-cuda's `cpp`
# compiler (CUDA C++ through NVRTC at run time), so LLVM is linked but does not generate the kernels.
#
# Idempotent. Undo with: rm -rf ~/.local/share/tracel  (otherwise every later cubecl-llvm 0.11 build
# on this account silently uses LLVM 22).
set -euo pipefail

if ! command -v /usr/lib/llvm-22/bin/llvm-config >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q llvm-22-dev libpolly-22-dev libzstd-dev
fi

bundle="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4"
mkdir -p "$bundle/bin"
ln -sfn /usr/lib/llvm-22/include "$bundle/include"
ln -sfn /usr/lib/llvm-22/lib "$bundle/lib"
# The bundler turns an absolute library path into `-llib<name>`; print `-l<name>` instead.
cat > "$bundle/bin/llvm-config" <<'WRAP'
#!/usr/bin/env bash
/usr/lib/llvm-22/bin/llvm-config "$@" | sed -E 's#/[^ ]*/lib([A-Za-z0-9_+.-]+)\.so(\.[0-9.]+)?#-l\1#g'
WRAP
chmod +x "$bundle/bin/llvm-config"
touch "$bundle/.tracel-llvm-installed"
echo "LLVM 22 stand-in ready at $bundle"

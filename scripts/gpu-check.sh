#!/usr/bin/env bash
# One prepared check for a lent GPU machine (an H200 with no network, no Rust toolchain, PyTorch
# installed; at most 64 MiB travel with the working tree, which is ~25 MiB; a few minutes of
# device time).
#
#   scripts/gpu-check.sh build            here: build the one binary that travels (tests/gpu_check.rs:
#                                         the golden tests and the measurements, CUDA + WGPU), strip
#                                         it, and pack it with the shared libraries the GPU machine
#                                         may lack into gpu-bundle/ (under 36 MiB)
#   scripts/gpu-check.sh run              on the GPU machine, from the repository root (gpu-bundle/
#                                         carried): results under $OUT (else ./gpu-check-out)
#   scripts/gpu-check.sh run --dry-run    here: the same steps from the same bundle on the CPU and
#                                         lavapipe at small shapes
#
# `run` does, each step under its own time limit (all inside $GPU_CHECK_BUDGET s, default 450),
# each logged, one summary (summary.md):
#   1. the golden tests (teacher vs transformers, time mixer and student vs rwkv_hybrid, WKV-7 vs
#      its reference) on CUDA;
#   2. WKV-7 forward + backward at B=8, T=4096, C=4096, N=64 in f32 and bf16 (bf16-stored inputs
#      around the f32 recurrence, as the time mixer under bf16-mixed), and the PyTorch twin
#      (benches/wkv7_torch.py) on the same GPU;
#   3. one stage-2 step at Qwen2.5-0.5B's shape (random weights made there from
#      benches/qwen2.5-0.5b/config.json), 4 × 2048 tokens in bf16-mixed: tokens/s, and peak GPU
#      memory sampled by nvidia-smi against the planner's prediction;
#   4. the golden tests and the WKV-7 measurement once more on WGPU over the machine's own Vulkan
#      driver (the Vulkan loader travels in the bundle; an NVIDIA ICD file is written if none is
#      found).
# With the device tool: `scripts/gpu-check.sh build` here, then
#   run(command="bash scripts/gpu-check.sh run", carry=["gpu-bundle"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bundle_dir=$repo/gpu-bundle

build() {
  set -e
  scripts/setup-llvm-standin.sh >/dev/null
  export CARGO_TARGET_DIR=${ARWKV_GPU_TARGET:-$HOME/.cache/arwkv-gpu-target}
  # The CUDA API the binaries bind to; any newer driver accepts it (CUDA 12.8 ⇒ driver ≥ 570).
  export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-12080}
  local listing exe
  listing=$(cargo test --release --locked --no-run -p arwkv-tests --features cuda,wgpu \
    --test gpu_check --message-format=json)
  exe=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "gpu_check"
    and .executable != null) | .executable' <<<"$listing" | tail -1)
  rm -rf "$bundle_dir"
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/bin" "$stage/lib"
  cp "$exe" "$stage/bin/gpu_check"
  strip "$stage"/bin/*
  # Every shared library the binaries load that is not glibc's own, the driver's or the GPU
  # machine's basics (libLLVM and what it needs, the Vulkan loader, libstdc++ of this toolchain).
  local lib
  for lib in $(ldd "$stage"/bin/* /usr/lib/x86_64-linux-gnu/libvulkan.so.1 2>/dev/null |
    awk '/=> \// {print $3}' | sort -u); do
    case $(basename "$lib") in
      libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | ld-linux* | libgcc_s.so*) ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
  cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$stage/lib/"
  # This machine's glibc, for a GPU machine whose own is older than the binary needs (it was
  # linked against 2.36): the binary then starts through this loader.
  mkdir -p "$stage/glibc"
  for lib in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 libgcc_s.so.1; do
    cp -L "/lib/x86_64-linux-gnu/$lib" "$stage/glibc/"
  done
  (cd "$stage" && sha256sum bin/* lib/* glibc/* >SHA256SUMS)
  mkdir -p "$bundle_dir"
  tar -C "$stage" -cf - . | xz -T2 -9e >"$bundle_dir/bundle.tar.xz"
  rm -rf "$stage"
  git rev-parse HEAD >"$bundle_dir/commit"
  local mib
  mib=$(du -m "$bundle_dir/bundle.tar.xz" | cut -f1)
  echo "gpu-bundle/bundle.tar.xz: ${mib} MiB (64 MiB travel with the working tree), commit $(cat "$bundle_dir/commit")"
  ((mib < 36)) || { echo "the bundle is too large to travel beside the working tree" >&2; exit 1; }
}

# ---- run ----------------------------------------------------------------------------------------

out=${OUT:-$repo/gpu-check-out}
summary=
note() { echo "$*" | tee -a "$summary"; }

# The whole run stays inside this many seconds (the device tool's limit is 600 per command).
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-450}))

# step NAME SECONDS COMMAND…: runs it with a limit (cut to what is left of the budget), logs to
# NAME.log, notes its status and time. Shell functions run through `bash -c` (exported).
step() {
  local name=$1 limit=$2; shift 2
  local left=$((deadline - SECONDS))
  if ((left < 10)); then
    note "- \`$name\`: skipped, the check's time budget is spent"
    return 1
  fi
  ((limit > left)) && limit=$left
  local t0=$SECONDS rc=0
  if [ "$(type -t "$1")" = function ]; then
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" >"$out/$name.log" 2>&1 || rc=$?
  else
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
  fi
  local verdict=ok
  ((rc == 0)) || verdict="FAILED (exit $rc$( ((rc == 124)) && echo ", over ${limit} s"))"
  note "- \`$name\`: $verdict in $((SECONDS - t0)) s (log: $name.log)"
  return $rc
}

# The NVRTC and CUDA headers cubecl-cuda compiles its kernels with: the CUDA toolkit where there is
# one, else the pip packages PyTorch ships (nvidia-cuda-nvrtc, nvidia-cuda-runtime, …).
find_cuda() {
  local py=$1 cuda=$2
  if [ -f /usr/local/cuda/include/cuda_fp16.h ]; then
    export CUDA_PATH=/usr/local/cuda
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
    return
  fi
  local site
  site=$("$py" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null) || return 0
  mkdir -p "$cuda/include" "$cuda/lib"
  local d f
  for d in "$site"/nvidia/*/include "$site"/nvidia/cu*/include; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do [ -e "$cuda/include/$(basename "$f")" ] || ln -s "$f" "$cuda/include/"; done
  done
  for f in "$site"/nvidia/*/lib/libnvrtc*.so* "$site"/nvidia/cu*/lib/libnvrtc*.so*; do
    [ -e "$f" ] && ln -sf "$f" "$cuda/lib/"
  done
  # cudarc looks for libnvrtc.so, libnvrtc.so.12, …: name whichever version is there.
  f=$(ls "$cuda"/lib/libnvrtc.so.* 2>/dev/null | grep -v builtins | head -1)
  [ -n "$f" ] && ln -sf "$f" "$cuda/lib/libnvrtc.so"
  export CUDA_PATH=$cuda
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$cuda/lib
}

# Vulkan on an NVIDIA machine: the driver's ICD file, written if the container lacks it.
find_vulkan() {
  local icd_dir=$1
  local icd
  for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$icd" ] && return
  done
  local glx
  glx=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
  [ -n "$glx" ] || return 0
  mkdir -p "$icd_dir"
  cat >"$icd_dir/nvidia_icd.json" <<EOF
{"file_format_version": "1.0.0", "ICD": {"library_path": "$glx", "api_version": "1.3.0"}}
EOF
  export VK_ICD_FILENAMES=$icd_dir/nvidia_icd.json
}

# Samples the GPU's used memory every 100 ms while a command runs; prints the peak in MiB.
gpu_peak_mib() {
  local file=$1; shift
  "$@" &
  local pid=$! peak=0 now
  while kill -0 "$pid" 2>/dev/null; do
    now=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1)
    [[ $now =~ ^[0-9]+$ ]] && ((now > peak)) && peak=$now
    sleep 0.1
  done
  local rc=0
  wait "$pid" || rc=$?
  echo "$peak" >"$file"
  return $rc
}

export -f gpu_peak_mib

run() {
  local dry=0
  [ "${1:-}" = "--dry-run" ] && dry=1
  mkdir -p "$out"
  summary=$out/summary.md
  : >"$summary"
  local work
  work=$(mktemp -d /tmp/arwkv-gpu-check.XXXX)
  [ -f "$bundle_dir/bundle.tar.xz" ] || { note "no gpu-bundle/bundle.tar.xz: run \`scripts/gpu-check.sh build\` first"; exit 1; }
  xz -dc "$bundle_dir/bundle.tar.xz" | tar -C "$work" -xf -
  (cd "$work" && sha256sum --quiet -c SHA256SUMS) || { note "the bundle is corrupt"; exit 1; }
  local bin=$work/bin
  export LD_LIBRARY_PATH=$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export ARWKV_TEST_FIXTURES=$repo/tests/fixtures ARWKV_TINY_ASSETS=$repo/arwkv/assets/tiny
  # Vulkan's loader (and Mesa) want a runtime directory; containers often have none.
  if [ ! -d "${XDG_RUNTIME_DIR:-/nonexistent}" ]; then
    export XDG_RUNTIME_DIR=$work/xdg
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
  fi
  local py=${ARWKV_BENCH_PYTHON:-python3}
  find_cuda "$py" "$work/cuda"
  find_vulkan "$work/vulkan"

  note "# GPU check, $(date -u '+%F %H:%M') UTC, bundle of commit $(cat "$bundle_dir/commit")"
  note ""
  note "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB, $(ldd --version | head -1)"
  note "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
  note "- torch: $("$py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo 'not importable')"
  note "- CUDA_PATH: ${CUDA_PATH:-none}; Vulkan ICD: ${VK_ICD_FILENAMES:-the system default}"
  note ""
  local gpu=cuda wkv7=8,4096,64,64 stage2=(GPU_CHECK_BATCH=4 GPU_CHECK_SEQ=2048)
  local stage2_title="A stage-2 step at Qwen2.5-0.5B's shape, 4 × 2048 tokens, bf16-mixed"
  if ((dry)); then
    note "Dry run: the CPU stands in for CUDA at small shapes; WGPU is whatever Vulkan is here."
    gpu=cpu wkv7=1,64,2,64 stage2=(GPU_CHECK_BATCH=1 GPU_CHECK_SEQ=64 GPU_CHECK_ITERS=1
      GPU_CHECK_TEACHER_CONFIG=arwkv/assets/tiny/teacher/config.json)
    stage2_title="A stage-2 step at the embedded teacher's shape, 1 × 64 tokens, f32"
  fi
  # The binary needs glibc ≥ 2.36; an older machine starts it through the bundle's own loader.
  local have
  have=$(ldd --version 2>/dev/null | head -1 | grep -o '[0-9]*\.[0-9]*$')
  # (A dry run always does, so that the path is exercised here.)
  if ((dry)) || [ "$(printf '%s\n2.36\n' "$have" | sort -V | head -1)" != 2.36 ]; then
    gpu_check="$work/glibc/ld-linux-x86-64.so.2 --library-path $work/glibc:$LD_LIBRARY_PATH $bin/gpu_check"
    note "- glibc $have here: the binary starts through the bundle's glibc 2.36 loader"
  else
    gpu_check=$bin/gpu_check
  fi
  # The golden tests of one backend: every test of the binary but the measurements.
  golden() { env ARWKV_TEST_BACKENDS="$1" $gpu_check --test-threads 1 --skip measurements::; }
  # A measurement: its JSON lines.
  measure() { env GPU_CHECK_BACKEND="$1" "${@:3}" $gpu_check --ignored --exact "measurements::$2" --nocapture --test-threads 1; }
  export -f golden measure
  export gpu_check

  note ""
  note "## 1. Golden tests on ${gpu^^}"
  step "golden-$gpu" 200 golden "$gpu" && note "  $(grep -h '^test result' "$out/golden-$gpu.log" | tail -1)"

  note ""
  note "## 2. WKV-7 forward + backward (B,T,H,N = $wkv7), f32 and bf16"
  step "wkv7-arwkv-$gpu" 120 measure "$gpu" wkv7_forward_backward GPU_CHECK_WKV7=$wkv7 &&
    grep -oh '{.*}' "$out/wkv7-arwkv-$gpu.log" | sed 's/^/  /' | tee -a "$summary"
  local dtype b t h n
  IFS=, read -r b t h n <<<"$wkv7"
  for dtype in f32 bf16; do
    if "$py" -c 'import torch' 2>/dev/null; then
      step "wkv7-torch-$gpu-$dtype" 120 "$py" benches/wkv7_torch.py --device "$gpu" --dtype "$dtype" \
        --batch "$b" --seq "$t" --heads "$h" --head-size "$n" --warmup 1 --iters 3 &&
        note "  $(tail -1 "$out/wkv7-torch-$gpu-$dtype.log")"
    else
      note "- \`wkv7-torch-$gpu-$dtype\`: skipped, no torch for $py"
    fi
  done

  note ""
  note "## 3. $stage2_title"
  if ((dry)); then
    step "stage2-$gpu" 300 measure cpu stage2_step "${stage2[@]}" GPU_CHECK_PRECISION=f32
  else
    step "stage2-cuda" 200 gpu_peak_mib "$out/stage2-peak-mib" measure cuda stage2_step "${stage2[@]}"
    note "  peak GPU memory (nvidia-smi; with the CUDA context and Burn's pool): $(cat "$out/stage2-peak-mib" 2>/dev/null) MiB"
  fi
  grep -oh '{.*}' "$out/stage2-$gpu.log" 2>/dev/null | sed 's/^/  /' | tee -a "$summary"

  note ""
  note "## 4. WGPU over this machine's Vulkan driver"
  step "golden-wgpu" 200 golden wgpu && note "  $(grep -h '^test result' "$out/golden-wgpu.log" | tail -1)"
  step "wkv7-arwkv-wgpu" 150 measure wgpu wkv7_forward_backward GPU_CHECK_WKV7=$wkv7 &&
    grep -oh '{.*}' "$out/wkv7-arwkv-wgpu.log" | sed 's/^/  /' | tee -a "$summary"
  rm -rf "$work"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac

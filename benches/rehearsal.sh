#!/usr/bin/env bash
# A rehearsal at Qwen2.5-0.5B's exact shape on the CPU: a teacher with random weights made from its
# config.json alone (benches/qwen2.5-0.5b/config.json; the embedded tokenizer, whose ids fit the
# 151,936-token vocabulary), its student, and 2 steps each of stage 1, stage 2, SFT and DPO at
# batch 1 × 256 tokens in f32 and in bf16-mixed. Prints, per run, the peak anonymous memory and the
# resident set's high-water mark (`peak_memory` below; the memory-mapped checkpoint counts only in
# the latter) and the seconds of each step (metrics.jsonl).
# Usage: benches/rehearsal.sh [WORK_DIR]   (about 12 GB of memory, ~10 GB of disk in WORK_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(realpath -m "${1:-$(mktemp -d)}")"
mkdir -p "$work"
cargo build --release --locked -p arwkv --quiet
bin="${CARGO_TARGET_DIR:-target}/release/arwkv"
echo "# $(date -u +%F) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GB"
[ -f "$work/teacher/config.json" ] ||
  "$bin" random-teacher --config benches/qwen2.5-0.5b/config.json \
    --tokenizer arwkv/assets/tiny/teacher --out "$work/teacher"

# Chats for SFT and answer pairs for DPO, cut from the embedded corpus.
python3 - "$work" arwkv/assets/tiny/corpus/train.txt <<'PY'
import json, sys
work, corpus = sys.argv[1], sys.argv[2]
paras = [p.strip() for p in open(corpus).read().split("\n\n") if len(p.strip()) > 200][:256]
# Answers of four passages each: longer than the context, so that every row holds 256 tokens.
paras = ["\n\n".join(paras[i:i + 4]) for i in range(0, len(paras) - 3, 4)]
with open(f"{work}/chats.jsonl", "w") as f:
    for i, p in enumerate(paras):
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Continue passage {i}."},
                                         {"role": "assistant", "content": p}]}) + "\n")
with open(f"{work}/pairs.jsonl", "w") as f:
    for i, p in enumerate(paras):
        f.write(json.dumps({"prompt": f"Continue passage {i}.", "chosen": p,
                            "rejected": paras[(i + 1) % len(paras)]}) + "\n")
PY

# Runs a command and writes its peak memory to $1 as JSON: the resident set's high-water mark
# (VmHWM, GNU time's %M) and the peak of its anonymous resident memory (RssAnon, sampled every
# 50 ms). They differ by file-backed pages: the checkpoint is memory-mapped, and the pages read while
# loading count in the resident set though the kernel may drop them at any time, so the anonymous
# peak is the memory the run needs.
peak_memory() {
  local out=$1; shift
  "$@" & local pid=$! anon=0 hwm=0 key value rest
  while kill -0 "$pid" 2>/dev/null; do
    while read -r key value rest; do # builtins only: no process per sample
      case $key in
        RssAnon:) ((value > anon)) && anon=$value ;;
        VmHWM:) ((value > hwm)) && hwm=$value ;;
      esac
    done < "/proc/$pid/status" 2>/dev/null || true
    sleep 0.05
  done
  local rc=0; wait "$pid" || rc=$?
  echo "{\"hwm_kb\": $hwm, \"anon_kb\": $anon, \"rc\": $rc}" > "$out"
  return $rc
}

only="${REHEARSAL_ONLY:-}"   # e.g. REHEARSAL_ONLY="sft dpo": run only those
run() { # name stage data pack [extra key lines…]
  local name=$1 stage=$2 data=$3 pack=$4; shift 4
  [ -z "$only" ] || [[ " $only " == *" $name "* ]] || return 0
  local out="$work/$name"
  rm -rf "$out"
  {
    echo "stage = \"$stage\""
    echo "teacher = \"$work/teacher\""
    echo "out = \"$out\""
    echo "steps = 2"
    echo "save_every = 1000"
    for line in "$@"; do echo "$line"; done
    echo "[data]"
    echo "files = [\"$data\"]"
    echo "context = 256"
    echo "batch_size = 1"
    echo "pack = $pack"
  } > "$out.toml"
  peak_memory "$out.mem.json" "$bin" distill --config "$out.toml" > "$out.log" 2>&1 ||
    { tail -5 "$out.log"; return 1; }
  python3 - "$name" "$out" <<'PY'
import json, sys
name, out = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
mem = json.load(open(f"{out}.mem.json"))
steps = [r["elapsed_s"] for r in rows]
per_step = [b - a for a, b in zip([0.0] + steps, steps)]
print(f"{name:<16} peak anon {mem['anon_kb'] / 2**20:6.2f} GiB (RSS {mem['hwm_kb'] / 2**20:6.2f})"
      f"   s/step {', '.join(f'{s:.1f}' for s in per_step)}")
PY
  # A run's checkpoint and student take ~8 GB at this shape: only its metrics are kept.
  rm -rf "$out/checkpoints" "$out/student"
}

corpus="$PWD/arwkv/assets/tiny/corpus/train.txt"
run align align "$corpus" true
run kl kl "$corpus" true
run kl-chunk64 kl "$corpus" true "loss_chunk_tokens = 64"
run kl-checkpointed kl "$corpus" true "activation_checkpointing = true"
run sft sft "$work/chats.jsonl" false
run sft-chunk64 sft "$work/chats.jsonl" false "loss_chunk_tokens = 64"
run dpo dpo "$work/pairs.jsonl" false
run dpo-chunk64 dpo "$work/pairs.jsonl" false "loss_chunk_tokens = 64"
# The same four stages in bf16-mixed (teacher and DPO's reference stored in bf16, the student
# computing in bf16 with f32 master weights).
bf16='precision = "bf16-mixed"'
run align-bf16 align "$corpus" true "$bf16"
run kl-bf16 kl "$corpus" true "$bf16"
run sft-bf16 sft "$work/chats.jsonl" false "$bf16"
run dpo-bf16 dpo "$work/pairs.jsonl" false "$bf16"

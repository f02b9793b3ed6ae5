#!/usr/bin/env bash
# A rehearsal at Qwen2.5-0.5B's exact shape on the CPU: a teacher with random weights made from its
# config.json alone (benches/qwen2.5-0.5b/config.json; the embedded tokenizer, whose ids fit the
# 151,936-token vocabulary), its student, and 2 steps each of stage 1, stage 2, SFT and DPO at
# batch 1 × 256 tokens in f32. Prints, per run, the peak resident memory (GNU time) and the seconds
# of each step (metrics.jsonl).
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
  /usr/bin/time -f %M -o "$out.kb" "$bin" distill --config "$out.toml" > "$out.log" 2>&1 ||
    { tail -5 "$out.log"; return 1; }
  python3 - "$name" "$out" <<'PY'
import json, sys
name, out = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
kb = int(open(f"{out}.kb").read().split()[-1])
steps = [r["elapsed_s"] for r in rows]
per_step = [b - a for a, b in zip([0.0] + steps, steps)]
print(f"{name:<16} peak {kb / 2**20:6.2f} GiB   s/step {', '.join(f'{s:.1f}' for s in per_step)}")
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

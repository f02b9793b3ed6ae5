#!/usr/bin/env python3
"""PyTorch/transformers twin of `arwkv bench teacher`: forward tokens/s of a random Qwen2.

Same shape, same work (logits of every position, no KV cache), same statistics (median of the
timed iterations after warm-up). Prints one JSON line like the Rust side.
"""

import argparse
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in [("hidden", 512), ("layers", 4), ("heads", 8), ("kv-heads", 2), ("intermediate", 1408),
                          ("vocab", 8192), ("batch", 1), ("seq", 512), ("warmup", 2), ("iters", 5), ("threads", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = Qwen2Config(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(a.seq, 1), tie_word_embeddings=True,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6}, attn_implementation=a.attn)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    ids = torch.tensor([[(i * 7919) % a.vocab for i in range(b * a.seq, (b + 1) * a.seq)] for b in range(a.batch)])
    with torch.inference_mode():
        for _ in range(a.warmup):
            model(ids, use_cache=False)
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            model(ids, use_cache=False)
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps(dict(bench="teacher_forward", implementation=f"transformers {a.attn} (torch {torch.__version__})",
                          device=f"cpu x{torch.get_num_threads()} threads",
                          shape=f"B={a.batch} T={a.seq} C={a.hidden} L={a.layers} H={a.heads} KV={a.kv_heads} "
                                f"I={a.intermediate} V={a.vocab}",
                          median_s=median, tokens_per_s=a.batch * a.seq / median)))


if __name__ == "__main__":
    main()

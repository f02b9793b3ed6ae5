#!/usr/bin/env python3
"""PyTorch twin of `arwkv bench wkv7` (CPU, or CUDA with --device cuda): the same WKV-7 recurrence (token loop over batched
[B, H, N, N] states, autograd backward), same shapes and input distributions, median of the timed
forward+backward runs. Prints one JSON line like the Rust side."""

import argparse
import json
import time

import torch


def wkv7(r, w, k, v, a, b):
    B, T, H, N = r.shape
    state = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)
    decay = torch.exp(-torch.exp(w))
    ys = []
    for t in range(T):
        sa = state @ a[:, t, :, :, None]
        state = state * decay[:, t, :, None, :] + sa * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((state @ r[:, t, :, :, None])[..., 0])
    return torch.stack(ys, dim=1), state


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in [("batch", 2), ("seq", 256), ("heads", 8), ("head-size", 64), ("warmup", 1), ("iters", 5),
                          ("threads", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"],
                   help="bf16: inputs and gradients stored in bf16 around the f32 recurrence, as `arwkv bench wkv7 --dtype bf16`")
    a = p.parse_args()
    stored = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if a.threads:
        torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    shape = (a.batch, a.seq, a.heads, a.head_size)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(shape, generator=g)
    r, k, v, kappa = u(-1, 1), u(-1, 1), u(-1, 1), u(-1, 1)
    w, iclr, dy = u(-3, -0.5), u(0, 1), u(-1, 1)
    kk = torch.nn.functional.normalize(kappa, dim=-1)
    aa, bb = -kk, kk * iclr
    leaves = [x.to(dev, stored).requires_grad_() for x in (r, w, k, v, aa, bb)]
    dy = dy.to(dev, stored)

    def run():
        y, _ = wkv7(*(x.float() for x in leaves))
        (y.to(stored) * dy).sum().backward()
        sync()

    for _ in range(a.warmup):
        run()
    times = []
    for _ in range(a.iters):
        sync()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps(dict(bench="wkv7_fwd_bwd", implementation=f"torch {torch.__version__} token loop + autograd",
                          device=(torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                  else f"cpu x{torch.get_num_threads()} threads"),
                          shape=f"B={a.batch} T={a.seq} H={a.heads} N={a.head_size}" + ("" if a.device == "cpu" else f" {a.dtype}"),
                          median_s=median,
                          tokens_per_s=a.batch * a.seq / median)))


if __name__ == "__main__":
    main()

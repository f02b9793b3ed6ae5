#!/usr/bin/env python3
"""PyTorch twin of `arwkv bench distill`: one stage-1 (alignment), stage-2 (KL), SFT or DPO training step
of the ARWKV student of the embedded tiny teacher, same shapes, same optimiser (AdamW β 0.9/0.95, ε 1e-8,
weight decay 0.1 on matrices, global clipping 1.0), median tokens/s of the timed steps. The teacher is
the committed Qwen2 loaded with transformers; the student's RWKV-7 time mixer is written here in plain
PyTorch (batched, the RWKV-LM x070 formulas, gated, no GroupNorm, LoRA ranks 64/64/32/128) with the WKV-7
token loop of `wkv7_torch.py`. Inputs are random token ids (data loading is negligible on both sides);
SFT scores the second half of each row (cross-entropy), DPO reads `2 × batch` rows (chosen, rejected)
through the policy and a frozen reference copy and scores their second halves (sigmoid loss, β 0.1,
label smoothing 0.1), so every row is `seq` real tokens as on the Rust side. Prints one JSON line like the
Rust side."""

import argparse
import json
import pathlib
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from wkv7_torch import wkv7  # noqa: E402

RANKS = {"w": 64, "a": 64, "v": 32, "g": 128}


class TimeMix(nn.Module):
    def __init__(self, C, N, layer_id):
        super().__init__()
        self.C, self.N, self.H, self.layer_id = C, N, C // N, layer_id
        vec = lambda: nn.Parameter(torch.rand(C) * 0.5)
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.a0, self.v0 = vec(), vec(), vec()
        lora = lambda r: (nn.Parameter(torch.randn(C, r) * 0.01), nn.Parameter(torch.randn(r, C) * 0.01))
        self.w1, self.w2 = lora(RANKS["w"])
        self.a1, self.a2 = lora(RANKS["a"])
        self.v1, self.v2 = lora(RANKS["v"])
        self.g1, self.g2 = lora(RANKS["g"])
        self.k_k, self.k_a = vec(), vec()
        self.r_k = nn.Parameter(torch.randn(self.H, N) * 0.1)
        self.receptance, self.key, self.value, self.output = (nn.Linear(C, C, bias=False) for _ in range(4))

    def forward(self, x, v_first):
        B, T, C = x.shape
        H, N = self.H, self.N
        xx = F.pad(x, (0, 0, 1, -1)) - x  # x_{t-1} - x_t
        xr, xw, xk, xv, xa, xg = (x + xx * p for p in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.receptance(xr)
        w = -F.softplus(-(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)) - 0.5
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        heads = lambda t: t.view(B, T, H, N)
        y, _ = wkv7(heads(r), heads(w), heads(k), heads(v), -kk, kk * heads(a))
        y = y.reshape(B, T, C) + ((heads(r) * heads(k) * self.r_k).sum(-1, keepdim=True) * heads(v)).view(B, T, C)
        return self.output(y * g), v_first


def adamw(params, lr=1e-4):
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stage", default="kl", choices=["align", "kl", "sft", "dpo"])
    p.add_argument("--teacher", default=str(pathlib.Path(__file__).parents[1] / "arwkv/assets/tiny/teacher"))
    for name, default in [("batch", 8), ("seq", 128), ("warmup", 2), ("iters", 8), ("threads", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_pretrained(a.teacher, dtype=torch.float32).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    cfg = teacher.config
    C = cfg.hidden_size
    layers = teacher.model.layers
    mixers = nn.ModuleList(TimeMix(C, 64, i) for i in range(len(layers)))
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
    positions = torch.arange(a.seq)[None]

    if a.stage == "align":
        params = list(mixers.parameters())

        def loss_fn():
            with torch.no_grad():
                h = teacher.model.embed_tokens(ids)
                rope = teacher.model.rotary_emb(h, positions)
            losses, v_first = [], None
            for i, layer in enumerate(layers):
                with torch.no_grad():
                    xn = layer.input_layernorm(h)
                    att = layer.self_attn(hidden_states=xn, position_embeddings=rope, attention_mask=None)[0]
                out, vf = mixers[i](xn, v_first)
                if i == 0:
                    v_first = vf.detach()
                losses.append(((att - out).norm(dim=-1) / C**0.5).mean())
                with torch.no_grad():
                    h = h + att
                    h = h + layer.mlp(layer.post_attention_layernorm(h))
            return torch.stack(losses).mean()
    else:
        import copy

        student = copy.deepcopy(teacher).train()
        for q in student.parameters():
            q.requires_grad_(True)
        params = list(student.parameters()) + list(mixers.parameters())

        def student_logits(ids, model=student, time_mixers=mixers):
            h, v_first = model.model.embed_tokens(ids), None
            for i, layer in enumerate(model.model.layers):
                out, vf = time_mixers[i](layer.input_layernorm(h), v_first)
                if i == 0:
                    v_first = vf
                h = h + out
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            return model.lm_head(model.model.norm(h))

        # The answer half of each row: logits at t score ids[t + 1] where the mask is 1.
        answer = torch.zeros(a.batch, a.seq)
        answer[:, a.seq // 2:] = 1.0

        def sequence_logprobs(logits, rows):
            logp = F.log_softmax(logits[:, :-1], -1).gather(-1, rows[:, 1:, None])[..., 0]
            return (logp * answer.repeat(len(rows) // a.batch, 1)[:, 1:]).sum(-1)

        if a.stage == "kl":
            def loss_fn():
                with torch.no_grad():
                    teacher_logp = F.log_softmax(teacher(ids).logits, -1)
                logp = F.log_softmax(student_logits(ids), -1)
                return (teacher_logp.exp() * (teacher_logp - logp)).sum(-1).mean()
        elif a.stage == "sft":
            def loss_fn():
                return -sequence_logprobs(student_logits(ids), ids).sum() / answer[:, 1:].sum()
        else:
            reference, reference_mixers = copy.deepcopy(student).eval(), copy.deepcopy(mixers).eval()
            for q in list(reference.parameters()) + list(reference_mixers.parameters()):
                q.requires_grad_(False)
            pairs = torch.cat([ids, torch.randint(0, cfg.vocab_size, (a.batch, a.seq))])
            beta, eps = 0.1, 0.1

            def loss_fn():
                with torch.no_grad():
                    ref = sequence_logprobs(student_logits(pairs, reference, reference_mixers), pairs)
                pol = sequence_logprobs(student_logits(pairs), pairs)
                delta = (pol[: a.batch] - ref[: a.batch]) - (pol[a.batch:] - ref[a.batch:])
                return (-(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)).mean()

    opt = adamw(params)

    def step():
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    rows = 2 * a.batch if a.stage == "dpo" else a.batch
    print(json.dumps({
        "bench": f"distill-{a.stage}", "implementation": f"pytorch {torch.__version__}", "device": "cpu",
        "shape": f"B{a.batch}xT{a.seq}", "median_s": median, "tokens_per_s": rows * a.seq / median,
    }))


if __name__ == "__main__":
    main()

"""attention.py: PyTorch reference for tests/test_attention.c. diffusers' reference attention
(heads folded into the batch, attn = softmax(scale * q @ k^T), out = attn @ v) one head at a
time (bounded memory): inputs, upstream gradient G, out, lse (B, H, Nq) and dq, dk, dv.
Cases with at most 2^22 scores per batch are evaluated in float64 from the float32 inputs (the
fixture carries no rounding of its own); the two 4096x4096 and the 1024x1024 SD cases in
float32 exactly as diffusers runs them (float64 would take minutes of the test budget)."""
import math

import torch

import lkref

# name: (B, Nq, Nk, heads, head_dim, input std, scale or None for 1/sqrt(D))
CASES = {
    # Stable Diffusion 1.5 self-attention at the three UNet widths, cross-attention on 77
    # text tokens, and SD-2 style 5 heads x 64
    "sd_self_320": (1, 4096, 4096, 8, 40, 1.0, None),
    "sd_self_640": (1, 1024, 1024, 8, 80, 1.0, None),
    "sd_self_1280": (1, 256, 256, 8, 160, 1.0, None),
    "sd_cross_320": (1, 4096, 77, 8, 40, 1.0, None),
    "sd2_self_320": (1, 4096, 4096, 5, 64, 1.0, None),
    # odd shapes: single query / key, head_dim 3, batch 3, one head, Nq != Nk, tile tails
    "q1k1": (3, 1, 1, 1, 3, 1.0, None),
    "q1": (2, 1, 77, 8, 40, 1.0, None),
    "k1": (3, 17, 1, 1, 5, 1.0, None),
    "k3_d3": (3, 5, 3, 2, 3, 1.0, None),
    "odd": (1, 130, 67, 3, 17, 1.0, None),
    "h1_d64": (1, 65, 65, 1, 64, 1.0, None),
    # peaked softmax (large scores) and an explicit scale
    "sharp": (2, 70, 90, 2, 24, 3.0, None),
    "scale": (1, 33, 47, 4, 8, 1.0, 0.3),
}


def reference(q, k, v, g, heads, scale):
    B, Nq, C = q.shape
    D = C // heads
    dt = torch.float64 if heads * Nq * k.shape[1] <= 1 << 22 else torch.float32
    q64, k64, v64 = (t.to(dt).requires_grad_() for t in (q, k, v))
    out = torch.empty(B, Nq, C, dtype=dt)
    lse = torch.empty(B, heads, Nq, dtype=dt)
    for h in range(heads):
        cols = slice(h * D, (h + 1) * D)
        qh, kh, vh = q64[:, :, cols], k64[:, :, cols], v64[:, :, cols]
        s = scale * torch.matmul(qh, kh.transpose(-1, -2))
        o = torch.matmul(s.softmax(-1), vh)
        o.backward(g[:, :, cols].to(dt))
        out[:, :, cols] = o.detach()
        lse[:, h] = torch.logsumexp(s.detach(), -1)
    return out, lse, q64.grad, k64.grad, v64.grad, dt == torch.float64


def main():
    path = lkref.out_path()
    lkref.setup(3)
    res = {}
    for name, (B, Nq, Nk, H, D, std, scale) in CASES.items():
        q = torch.randn(B, Nq, H * D) * std
        k = torch.randn(B, Nk, H * D) * std
        v = torch.randn(B, Nk, H * D)
        g = torch.randn(B, Nq, H * D)
        sc = scale if scale is not None else 1.0 / math.sqrt(D)
        out, lse, dq, dk, dv, exact = reference(q, k, v, g, H, sc)
        for key, t in (("q", q), ("k", k), ("v", v), ("G", g), ("out", out), ("lse", lse),
                       ("dq", dq), ("dk", dk), ("dv", dv)):
            res[name + "." + key] = t.float()
        res[name + ".cfg"] = torch.tensor([B, Nq, Nk, H, D], dtype=torch.int64)
        res[name + ".scale"] = torch.tensor([0.0 if scale is None else scale])
        res[name + ".exact"] = torch.tensor([1 if exact else 0], dtype=torch.int64)
    lkref.save(path, res, {"torch": torch.__version__, "cases": ",".join(CASES)})


if __name__ == "__main__":
    main()

"""linear.py: PyTorch reference for tests/test_linear.c: nn.functional.linear with F32 weights
and with F16/BF16-rounded weights (the same rounded values on both sides), and batched matmul
including transposed operands; forward and every gradient. Inputs are not stored (both sides
generate them with the harness's lk_t_fill_uniform); half weights are stored as rounded."""
import numpy as np
import torch
import torch.nn.functional as F

import lkref


uni = lkref.uni


# (name, x shape, out features N, bias, weight dtype); must match tests/test_linear.c
LINEAR = [("sd320", (1, 4096, 320), 320, True, "F32"),
          ("geglu_proj", (1, 4096, 320), 2560, True, "F32"),
          ("out1280", (1, 4096, 1280), 320, True, "F32"),
          ("kv768", (77, 768), 320, False, "F32"),
          ("sd320_f16", (1, 4096, 320), 320, True, "F16"),
          ("geglu_proj_bf16", (1, 4096, 320), 2560, True, "BF16"),
          ("kv768_f16", (77, 768), 320, False, "F16"),
          ("kv768_bf16", (77, 768), 320, False, "BF16"),
          ("wide_f16", (8, 1280), 2560, True, "F16"),  # > 2M weights: several widened blocks
          ("odd", (3, 7), 5, True, "F32"),
          ("odd_bf16", (3, 7), 5, True, "BF16"),
          ("n1", (2, 3, 5), 1, False, "F32"),
          ("k1", (1, 1), 1, True, "F32"),
          ("m1", (1, 320), 1280, True, "F32")]
# (name, a base shape, a transposed, b base shape, b transposed): the operand is the base
# tensor, or base.transpose(-1, -2) when transposed; gradients are of the base tensors.
MATMUL = [("batched", (2, 3, 5, 7), False, (2, 3, 7, 4), False),
          ("shared_b", (3, 5, 7), False, (7, 4), False),
          ("bt_view", (2, 6, 5), False, (2, 4, 5), True),
          ("at_view", (2, 5, 6), True, (2, 5, 4), False),
          ("at_shared", (3, 7, 5), True, (7, 4), False),
          ("both_t", (2, 5, 6), True, (2, 4, 5), True),
          ("mat11", (1, 1), False, (1, 1), False),
          ("b1", (1, 4, 3), False, (1, 3, 2), False),
          ("attn", (8, 256, 40), False, (8, 77, 40), True)]
HALF = {"F16": torch.float16, "BF16": torch.bfloat16}


def main():
    lkref.setup(0)
    out = {}
    for i, (name, xs, N, bias, wdt) in enumerate(LINEAR):
        K = xs[-1]
        seed = 5000 + 10 * i
        x = uni(xs, -1.0, 1.0, seed).requires_grad_(True)
        lim = 1.0 / K ** 0.5
        w = uni((N, K), -lim, lim, seed + 1)
        if wdt in HALF:
            wh = w.to(HALF[wdt])
            out[f"lin.{name}.w"] = wh
            w = wh.float()
        w.requires_grad_(wdt == "F32")
        b = uni((N,), -0.5, 0.5, seed + 2).requires_grad_(True) if bias else None
        y = F.linear(x, w, b)
        dy = uni(tuple(y.shape), -1.0, 1.0, seed + 3)
        y.backward(dy)
        out[f"lin.{name}.y"] = y
        out[f"lin.{name}.dx"] = x.grad
        if wdt == "F32":
            out[f"lin.{name}.dw"] = w.grad
        if bias:
            out[f"lin.{name}.db"] = b.grad
    for i, (name, ash, at, bsh, bt) in enumerate(MATMUL):
        seed = 6000 + 10 * i
        a0 = uni(ash, -1.0, 1.0, seed).requires_grad_(True)
        b0 = uni(bsh, -1.0, 1.0, seed + 1).requires_grad_(True)
        a = a0.transpose(-1, -2) if at else a0
        b = b0.transpose(-1, -2) if bt else b0
        y = torch.matmul(a, b)
        dy = uni(tuple(y.shape), -1.0, 1.0, seed + 2)
        y.backward(dy)
        out[f"mm.{name}.y"] = y
        out[f"mm.{name}.da"] = a0.grad
        out[f"mm.{name}.db"] = b0.grad
    lkref.save(lkref.out_path(), out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

"""activation.py: PyTorch reference for tests/test_activation.c: SiLU, GELU (erf and tanh),
QuickGELU and diffusers' GEGLU (hidden * gelu(gate)), forward and input gradient. Inputs are not
stored: both sides generate them with the harness's lk_t_fill_uniform (splitmix64)."""
import numpy as np
import torch
import torch.nn.functional as F

import lkref


uni = lkref.uni


# (name, shape, input range); must match tests/test_activation.c
SHAPES = [("sd_a", (1, 1280, 16, 16), 6.0), ("sd_b", (1, 4096, 1280), 8.0),
          ("odd7", (7,), 6.0), ("odd357", (3, 5, 7), 15.0), ("one", (1,), 3.0)]
ACTS = {"silu": F.silu, "gelu": F.gelu,
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}
# tanh / quick GELU only on the smaller shapes
ACT_SHAPES = {"silu": None, "gelu": None, "gelu_tanh": ("sd_a", "odd7", "odd357", "one"),
              "quick_gelu": ("sd_a", "odd7", "odd357", "one")}
GEGLU = [("sd", (1, 4096, 2560)), ("odd", (3, 7, 14)), ("d1", (1, 2))]


def main():
    lkref.setup(0)
    out = {}
    for si, (sname, shape, r) in enumerate(SHAPES):
        for ai, (aname, fn) in enumerate(ACTS.items()):
            if ACT_SHAPES[aname] is not None and sname not in ACT_SHAPES[aname]:
                continue
            x = uni(shape, -r, r, 100 + si).requires_grad_(True)
            dy = uni(shape, -1.0, 1.0, 200 + si)
            y = fn(x)
            y.backward(dy)
            out[f"{aname}.{sname}.y"] = y
            out[f"{aname}.{sname}.dx"] = x.grad
    for gi, (gname, shape) in enumerate(GEGLU):
        x = uni(shape, -5.0, 5.0, 300 + gi).requires_grad_(True)
        h, g = x.chunk(2, dim=-1)
        y = h * F.gelu(g)
        dy = uni(tuple(y.shape), -1.0, 1.0, 400 + gi)
        y.backward(dy)
        out[f"geglu.{gname}.y"] = y
        out[f"geglu.{gname}.dx"] = x.grad
    lkref.save(lkref.out_path(), out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

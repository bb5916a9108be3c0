"""norm.py: PyTorch reference for tests/test_norm.c: GroupNorm (plain and followed by SiLU) and
LayerNorm, forward and the gradients of input, weight and bias. Inputs are not stored: both sides
generate them with the harness's lk_t_fill_uniform (splitmix64)."""
import numpy as np
import torch
import torch.nn.functional as F

import lkref


uni = lkref.uni


# (name, shape, groups, eps, silu, affine, x half-range); must match tests/test_norm.c.
# x = uniform(-r, r) + a per-channel offset in [-3, 3) (mean far from 0 tests the variance).
# Cases in F64 are ill-conditioned (2-element groups; std 6e-4 around a mean of 3): there torch's
# own f32 result is off by ~1e-4, so the reference is computed in float64 (then rounded).
GN = [("sd320", (1, 320, 64, 64), 32, 1e-5, False, True, 2.0),
      ("sd320_e6_silu", (1, 320, 64, 64), 32, 1e-6, True, True, 2.0),
      ("sd320_e6", (1, 320, 64, 64), 32, 1e-6, False, True, 2.0),
      ("sd640", (1, 640, 32, 32), 32, 1e-6, False, True, 2.0),
      ("sd640_silu", (1, 640, 32, 32), 32, 1e-5, True, True, 2.0),
      ("sd1280", (1, 1280, 16, 16), 32, 1e-5, False, True, 2.0),
      ("sd1280_e6_silu", (1, 1280, 16, 16), 32, 1e-6, True, True, 2.0),
      ("sd320b2_silu", (2, 320, 64, 64), 32, 1e-5, True, True, 2.0),
      ("sd320b2_e6", (2, 320, 64, 64), 32, 1e-6, False, True, 2.0),
      ("c3_g3_1x1", (1, 3, 1, 1), 3, 1e-5, False, True, 2.0),
      ("c3_g1_b3", (3, 3, 5, 7), 1, 1e-5, True, True, 2.0),
      ("c6_g3_rank1", (3, 6, 7), 3, 1e-5, False, True, 2.0),
      ("c4_g2_rank0", (2, 4), 2, 1e-5, True, True, 2.0),
      ("noaffine", (2, 6, 3, 3), 2, 1e-5, False, False, 2.0),
      ("noaffine_silu", (2, 6, 3, 3), 3, 1e-5, True, False, 2.0),
      ("img1x1_g32_silu", (3, 64, 1, 1), 32, 1e-6, True, True, 2.0),
      ("tinyvar", (1, 32, 8, 8), 32, 1e-5, False, True, 1e-3)]
F64 = ("img1x1_g32_silu", "tinyvar")
# (name, shape, eps, affine)
LN = [("sd320", (1, 4096, 320), 1e-5, True),
      ("sd768", (1, 77, 768), 1e-5, True),
      ("odd7", (3, 7), 1e-5, True),
      ("row1", (1, 7), 1e-6, True),
      ("c1", (5, 1), 1e-5, True),
      ("noaffine", (2, 3, 7), 1e-5, False)]


def main():
    lkref.setup(0)
    out = {}
    for i, (name, shape, G, eps, silu, affine, r) in enumerate(GN):
        C = shape[1]
        seed = 1000 + 10 * i
        off = uni((C,), -3.0, 3.0, seed + 1)
        dt = torch.float64 if name in F64 else torch.float32
        x = uni(shape, -r, r, seed) + off.reshape((1, C) + (1,) * (len(shape) - 2))
        x = x.to(dt).requires_grad_(True)
        w = uni((C,), 0.5, 1.5, seed + 2).to(dt).requires_grad_(True) if affine else None
        b = uni((C,), -0.5, 0.5, seed + 3).to(dt).requires_grad_(True) if affine else None
        dy = uni(shape, -1.0, 1.0, seed + 4).to(dt)
        y = torch.group_norm(x, G, w, b, eps)  # F.group_norm refuses 1-element groups
        if silu:
            y = F.silu(y)
        y.backward(dy)
        out[f"gn.{name}.y"] = y.float()
        out[f"gn.{name}.dx"] = x.grad.float()
        if affine:
            out[f"gn.{name}.dw"] = w.grad.float()
            out[f"gn.{name}.db"] = b.grad.float()
    for i, (name, shape, eps, affine) in enumerate(LN):
        C = shape[-1]
        seed = 2000 + 10 * i
        x = (uni(shape, -2.0, 2.0, seed) + 1.5).requires_grad_(True)
        w = uni((C,), 0.5, 1.5, seed + 2).requires_grad_(True) if affine else None
        b = uni((C,), -0.5, 0.5, seed + 3).requires_grad_(True) if affine else None
        dy = uni(shape, -1.0, 1.0, seed + 4)
        y = F.layer_norm(x, (C,), w, b, eps)
        y.backward(dy)
        out[f"ln.{name}.y"] = y
        out[f"ln.{name}.dx"] = x.grad
        if affine:
            out[f"ln.{name}.dw"] = w.grad
            out[f"ln.{name}.db"] = b.grad
    lkref.save(lkref.out_path(), out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

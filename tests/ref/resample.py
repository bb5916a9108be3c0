"""resample.py: PyTorch reference for tests/test_resample.c: nearest 2x upsampling
(F.interpolate(scale_factor=2, mode="nearest")) and F.avg_pool2d without padding, forward and
input gradient. Inputs are not stored: both sides generate them with the harness's
lk_t_fill_uniform (splitmix64)."""
import numpy as np
import torch
import torch.nn.functional as F

import lkref


uni = lkref.uni


# must match tests/test_resample.c
UP = [("sd1280", (1, 1280, 8, 8)), ("sd640", (1, 640, 32, 32)), ("c3_1x1", (3, 3, 1, 1)),
      ("odd", (2, 3, 5, 7)), ("w17", (1, 1, 1, 17)), ("w37", (1, 2, 3, 37))]
# (name, shape, kernel, stride)
POOL = [("sd4", (1, 4, 64, 64), 2, 2), ("odd_floor", (3, 3, 5, 7), 2, 2),
        ("k3s2_overlap", (2, 3, 7, 9), 3, 2), ("k4_to1x1", (1, 2, 4, 4), 4, 4),
        ("k1", (1, 1, 5, 5), 1, 1), ("k2s1_overlap", (1, 2, 6, 6), 2, 1),
        ("k2s3_gaps", (1, 2, 8, 8), 2, 3), ("wide", (2, 3, 33, 70), 2, 2)]


def main():
    lkref.setup(0)
    out = {}
    for i, (name, shape) in enumerate(UP):
        x = uni(shape, -1.0, 1.0, 8000 + 10 * i).requires_grad_(True)
        y = F.interpolate(x, scale_factor=2, mode="nearest")
        y.backward(uni(tuple(y.shape), -1.0, 1.0, 8001 + 10 * i))
        out[f"up.{name}.y"] = y
        out[f"up.{name}.dx"] = x.grad
    for i, (name, shape, k, s) in enumerate(POOL):
        x = uni(shape, -1.0, 1.0, 9000 + 10 * i).requires_grad_(True)
        y = F.avg_pool2d(x, k, s)
        y.backward(uni(tuple(y.shape), -1.0, 1.0, 9001 + 10 * i))
        out[f"pool.{name}.y"] = y
        out[f"pool.{name}.dx"] = x.grad
    lkref.save(lkref.out_path(), out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

"""dropout.py: torch.nn.functional.dropout (training) references for tests/test_dropout.c.

Small cases cKK store x, dy, y = dropout(x), dx = d<y,dy>/dx, the generator seed and p, and
'after' = torch.randn(5) drawn right after the dropout (checks how far the generator moved).
The SD-size case (sd.*) stores only seeds and shape (x and dy are torch.randn draws the C test
regenerates with lk_rng, itself checked bit for bit by test_rng), the kept mask (U8), torch's
scale and 'after'."""
import numpy as np
import torch
import torch.nn.functional as F

import lkref

CASES = [  # (shape, p, seed)
    ((3, 3, 1, 1), 0.25, 1),
    ((17,), 0.5, 2),
    ((1, 1, 1, 1), float(np.float32(0.1)), 3),
    ((3, 5, 7), float(np.float32(0.9)), 4),
    ((4, 33), float(np.float32(0.1)), 5),
    ((2, 33), 1.0, 6),
    ((5, 3), 0.0, 7),
]
SD_SHAPE = (1, 320, 64, 64)
SD_P = float(np.float32(0.1))


def run(x, p, seed):
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = F.dropout(x, p, training=True)
    after = torch.randn(5)
    return x, y, after


def main():
    lkref.setup(0)
    out = {}
    for k, (shape, p, seed) in enumerate(CASES):
        x = torch.randn(shape)
        dy = torch.randn(shape)
        x, y, after = run(x, p, seed)
        y.backward(dy)
        c = "c%02d." % k
        out[c + "x"] = x.detach()
        out[c + "dy"] = dy
        out[c + "y"] = y.detach()
        out[c + "dx"] = x.grad
        out[c + "after"] = after
        out[c + "p"] = torch.tensor([p], dtype=torch.float32)
        out[c + "seed"] = torch.tensor([seed], dtype=torch.int64)
    gx = torch.Generator().manual_seed(1001)
    gd = torch.Generator().manual_seed(1002)
    x = torch.randn(SD_SHAPE, generator=gx)
    dy = torch.randn(SD_SHAPE, generator=gd)
    x, y, after = run(x, SD_P, 11)
    y.backward(dy)
    kept = (y.detach() != 0) | (x.grad != 0)  # x holds exact zeros (u = 0 draws) where kept
    out["sd.shape"] = torch.tensor(SD_SHAPE, dtype=torch.int64)
    out["sd.xseed"] = torch.tensor([1001], dtype=torch.int64)
    out["sd.dyseed"] = torch.tensor([1002], dtype=torch.int64)
    out["sd.seed"] = torch.tensor([11], dtype=torch.int64)
    out["sd.p"] = torch.tensor([SD_P], dtype=torch.float32)
    out["sd.mask"] = kept.to(torch.uint8)
    out["sd.scale"] = (torch.ones(1) / (1 - SD_P)).float()
    out["sd.after"] = after
    # torch's y and dx are x * scale and dy * scale where kept, 0 elsewhere: the C test relies on it
    scale = out["sd.scale"]
    assert torch.equal(y.detach(), torch.where(kept, x.detach() * scale, torch.zeros(())))
    assert torch.equal(x.grad, torch.where(kept, dy * scale, torch.zeros(())))
    lkref.save(lkref.out_path(), out, {"rule": "see tests/ref/dropout.py"})


if __name__ == "__main__":
    main()

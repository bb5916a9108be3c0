"""softmax.py: PyTorch reference for tests/test_softmax.c: softmax over the last dim and its
gradient, evaluated in float64 from float32 inputs: x, upstream gradient G, out, dx."""
import torch

import lkref

# name: (shape, input std)
CASES = {
    # attention scores of Stable Diffusion: cross-attention (heads*batch, 4096 queries, 77 text
    # tokens) and a slice of 4096-token self-attention rows
    "sd_cross": ((8, 4096, 77), 3.0),
    "sd_self": ((1, 256, 4096), 3.0),
    # odd shapes: one element, one row, rows not a multiple of the vector width, 0-d, batch 3
    "one": ((1, 1), 1.0),
    "scalar": ((), 1.0),
    "row3": ((3,), 1.0),
    "r5x3": ((5, 3), 1.0),
    "b3_17": ((3, 7, 17), 2.0),
    "w31": ((2, 3, 31), 1.0),
    "w1000": ((4, 1000), 5.0),
    # large logits: exp would overflow without the max shift
    "huge": ((6, 40), 300.0),
}


def main():
    path = lkref.out_path()
    lkref.setup(5)
    res = {}
    for name, (shape, std) in CASES.items():
        x = torch.randn(shape) * std
        if name == "b3_17":
            x[0, 0, 3] = float("-inf")  # masked logits get probability 0
            x[1, 2, :5] = float("-inf")
        g = torch.randn(shape)
        x64 = x.double().requires_grad_()
        if x64.dim() > 0:
            y = torch.softmax(x64, -1)
        else:
            y = torch.softmax(x64.reshape(1), -1).reshape(())
        y.backward(g.double())
        res[name + ".x"] = x
        res[name + ".G"] = g
        res[name + ".out"] = y.detach().float()
        res[name + ".dx"] = x64.grad.float()
    lkref.save(path, res, {"torch": torch.__version__, "cases": ",".join(CASES)})


if __name__ == "__main__":
    main()

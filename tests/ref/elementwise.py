"""elementwise.py: PyTorch reference for tests/test_elementwise.c (add/sub/mul with numpy
broadcasting, scale, add_scalar): inputs, a random upstream gradient G, outputs and gradients."""
import torch

import lkref


def binary(out, name, op, sa, sb, same=False):
    a = torch.randn(sa, requires_grad=True)
    b = a if same else torch.randn(sb, requires_grad=True)
    y = {"add": torch.add, "sub": torch.sub, "mul": torch.mul}[op](a, b)
    g = torch.randn(y.shape)
    y.backward(g)
    out[name + ".a"] = a
    out[name + ".G"] = g
    out[name + ".out"] = y
    out[name + ".da"] = a.grad
    if not same:
        out[name + ".b"] = b
        out[name + ".db"] = b.grad


def main():
    path = lkref.out_path()
    lkref.setup(1)
    out = {}
    # Stable Diffusion shapes: time-embedding add onto a feature map, bias add on tokens
    binary(out, "add_temb", "add", (1, 320, 64, 64), (1, 320, 1, 1))
    binary(out, "add_bias", "add", (2, 4096, 320), (320,))
    # broadcasting on both sides, odd sizes
    binary(out, "mul_both", "mul", (3, 1, 5), (1, 4, 1))
    binary(out, "sub_both", "sub", (3, 7, 1, 1), (1, 1, 5, 13))
    binary(out, "sub_same", "sub", (2, 3, 17), (2, 3, 17))
    binary(out, "mul_chan", "mul", (1, 64, 33, 17), (1, 64, 1, 1))
    binary(out, "mul_img1", "mul", (3, 3, 1, 1), (3, 1, 1, 1))
    binary(out, "add_rank", "add", (4, 1, 3), (2, 1))
    binary(out, "mul_scalar0d", "mul", (5, 19), ())
    binary(out, "sub_lead", "sub", (6,), (3, 1, 6))
    binary(out, "mul_self", "mul", (37,), None, same=True)
    # a strided (transposed) view as the left operand
    x = torch.randn(5, 3, requires_grad=True)
    z = torch.randn(3, 5, requires_grad=True)
    y = x.t() * z
    g = torch.randn(y.shape)
    y.backward(g)
    out.update({"mul_t.x": x, "mul_t.z": z, "mul_t.G": g, "mul_t.out": y, "mul_t.dx": x.grad,
                "mul_t.dz": z.grad})
    # scalar ops
    x = torch.randn(3, 5, 7, requires_grad=True)
    y = x * 0.37
    g = torch.randn(y.shape)
    y.backward(g)
    out.update({"scale.x": x, "scale.G": g, "scale.out": y, "scale.dx": x.grad})
    x = torch.randn(3, 5, 7, requires_grad=True)
    y = x + 1.5
    g = torch.randn(y.shape)
    y.backward(g)
    out.update({"adds.x": x, "adds.G": g, "adds.out": y, "adds.dx": x.grad})
    lkref.save(path, out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

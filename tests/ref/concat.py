"""concat.py: PyTorch reference for tests/test_concat.c: torch.cat along channels (the UNet skip
connection), the last dim and dim 0, torch.split, with gradients for random upstream gradients."""
import torch

import lkref


def main():
    path = lkref.out_path()
    lkref.setup(3)
    out = {}
    # concat cases: (name, shapes, dim)
    cases = [("skip", [(1, 640, 32, 32), (1, 320, 32, 32)], 1),
             ("last", [(2, 3, 5), (2, 3, 7), (2, 3, 1)], -1),
             ("first", [(1, 4, 3), (3, 4, 3)], 0),
             ("img1", [(3, 3, 1, 1), (3, 5, 1, 1)], 1),
             ("tok", [(2, 77, 768), (2, 77, 768)], 1)]
    for name, shapes, dim in cases:
        xs = [torch.randn(s, requires_grad=True) for s in shapes]
        y = torch.cat(xs, dim)
        g = torch.randn(y.shape)
        y.backward(g)
        out.update({name + ".G": g, name + ".out": y})
        for i, x in enumerate(xs):
            out["%s.x%d" % (name, i)] = x
            out["%s.dx%d" % (name, i)] = x.grad
    # concat with a transposed (strided) input
    x = torch.randn(5, 3, requires_grad=True)
    z = torch.randn(3, 2, requires_grad=True)
    y = torch.cat([x.t(), z], 1)
    g = torch.randn(y.shape)
    y.backward(g)
    out.update({"tr.x": x, "tr.z": z, "tr.G": g, "tr.out": y, "tr.dx": x.grad, "tr.dz": z.grad})
    # split cases: (name, shape, dim, sizes)
    for name, shape, dim, sizes in [("s_skip", (1, 960, 32, 32), 1, [640, 320]),
                                    ("s_last", (2, 77, 768), -1, [300, 1, 467]),
                                    ("s_first", (3, 4, 5), 0, [1, 0, 2])]:
        x = torch.randn(shape, requires_grad=True)
        parts = torch.split(x, sizes, dim)
        loss = 0
        for i, p in enumerate(parts):
            g = torch.randn(p.shape)
            loss = loss + (p * g).sum()
            out["%s.G%d" % (name, i)] = g
            out["%s.out%d" % (name, i)] = p
        loss.backward()
        out.update({name + ".x": x, name + ".dx": x.grad})
    lkref.save(path, out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

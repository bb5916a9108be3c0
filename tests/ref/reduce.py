"""reduce.py: PyTorch reference for tests/test_reduce.c: sum / mean over everything and over one
dim (keepdim both ways), and the MSE loss, with gradients for a random upstream gradient."""
import torch

import lkref


def main():
    path = lkref.out_path()
    lkref.setup(2)
    out = {}
    # one-dim reductions: (name, shape, dim, keepdim, mean)
    cases = [("d0", (2, 3, 5, 7), 0, False, False), ("d1", (2, 3, 5, 7), 1, True, False),
             ("d2", (2, 3, 5, 7), 2, False, True), ("d3", (2, 3, 5, 7), -1, True, True),
             ("tok", (2, 77, 768), 1, False, False), ("chan", (2, 77, 768), -1, True, True),
             ("img", (1, 320, 64, 64), 1, False, True), ("one", (3, 1, 1), 1, False, False),
             ("vec", (17,), 0, True, True)]
    for name, shape, dim, keep, mean in cases:
        x = torch.randn(shape, requires_grad=True)
        y = x.mean(dim, keepdim=keep) if mean else x.sum(dim, keepdim=keep)
        g = torch.randn(y.shape)
        y.backward(g)
        out.update({name + ".x": x, name + ".G": g, name + ".out": y, name + ".dx": x.grad})
    # totals
    for name, shape, mean in [("sum", (1, 320, 64, 64), False), ("mean", (1, 320, 64, 64), True),
                              ("sum_odd", (3, 1, 5), False), ("mean_odd", (1, 1, 1), True)]:
        x = torch.randn(shape, requires_grad=True)
        y = x.mean() if mean else x.sum()
        g = torch.tensor(0.7)
        y.backward(g)
        out.update({name + ".x": x, name + ".out": y.reshape(1), name + ".dx": x.grad})
    # MSE, the diffusion training loss
    for name, shape in [("mse", (2, 4, 64, 64)), ("mse_odd", (3, 1, 1, 5))]:
        a = torch.randn(shape, requires_grad=True)
        b = torch.randn(shape, requires_grad=True)
        loss = torch.nn.functional.mse_loss(a, b)
        loss.backward()
        out.update({name + ".a": a, name + ".b": b, name + ".out": loss.reshape(1),
                    name + ".da": a.grad, name + ".db": b.grad})
    # L1 (autoencoder reconstruction) and exp (posterior std), with a few exact ties a == b
    a = torch.randn(3, 5, 7, requires_grad=True)
    b = torch.randn(3, 5, 7)
    b[0, 0, :3] = a.detach()[0, 0, :3]
    b.requires_grad_(True)
    loss = torch.nn.functional.l1_loss(a, b)
    loss.backward()
    out.update({"l1.a": a, "l1.b": b, "l1.y": loss.reshape(1), "l1.ga": a.grad, "l1.gb": b.grad})
    a2 = a.detach().clone().requires_grad_(True)
    e = torch.exp(a2)
    (e * b.detach()).sum().backward()
    out.update({"exp.y": e, "exp.ga": a2.grad})
    lkref.save(path, out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

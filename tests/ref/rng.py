"""rng.py: reference draws of PyTorch's CPU generator for tests/test_rng.c.

Each sequence KK seeds a fresh torch.Generator (sKK.seed, int64) and makes the calls sKK.cJJ.OP
in order on it (OP: randn, rand, or randint.LO.HI); each tensor holds that call's output, and
its numel is the call's size. The C test replays the calls by name, so the two cannot drift."""
import torch

import lkref

SEQS = [
    # (seed, [(op, n[, lo, hi]), ...])
    (0, [("randn", 1)]),
    (1, [("randn", 2)]),
    (2, [("randn", 15)]),
    (3, [("randn", 16)]),
    (4, [("randn", 17)]),
    (5, [("randn", 31)]),
    (6, [("randn", 100)]),
    (7, [("randn", 4 * 64 * 64)]),
    (42, [("randn", 2 * 4 * 64 * 64), ("randn", 2 * 4 * 64 * 64), ("randn", 33)]),
    # the cached second Box-Muller value survives across calls and other ops
    (1234, [("randn", 5), ("randn", 3), ("rand", 7), ("randn", 1), ("randn", 1), ("randn", 20),
            ("randn", 1), ("randint", 9, 0, 10), ("randn", 2)]),
    (2**32 + 5, [("randn", 7), ("randn", 64)]),  # manual_seed keeps the low 32 bits
    (2**63 - 1, [("rand", 3), ("randn", 3)]),
    (99, [("rand", 1), ("rand", 7), ("rand", 1000), ("randn", 4)]),
    (100, [("randint", 50, 0, 10), ("randint", 50, -5, 5), ("randint", 50, 0, 1),
           ("randint", 50, 3, 1000003), ("randint", 50, 0, 2**32 - 1), ("randint", 50, 0, 2**32),
           ("randint", 50, -2**40, 2**40), ("randint", 50, -2**62, 2**62), ("randint", 50, 0, 1000)]),
    (7777, [("randint", 3, 0, 1000), ("randn", 5), ("rand", 2), ("randn", 999)]),
]


def main():
    lkref.setup(0)
    out = {}
    for k, (seed, calls) in enumerate(SEQS):
        g = torch.Generator()
        g.manual_seed(seed)
        out["s%02d.seed" % k] = torch.tensor([seed if seed < 2**63 else seed - 2**64], dtype=torch.int64)
        for j, c in enumerate(calls):
            op, n = c[0], c[1]
            if op == "randn":
                t = torch.randn(n, generator=g)
                name = "randn"
            elif op == "rand":
                t = torch.rand(n, generator=g)
                name = "rand"
            else:
                lo, hi = c[2], c[3]
                t = torch.randint(lo, hi, (n,), generator=g)
                name = "randint.%d.%d" % (lo, hi)
            out["s%02d.c%02d.%s" % (k, j, name)] = t
    lkref.save(lkref.out_path(), out, {"rule": "see tests/ref/rng.py"})


if __name__ == "__main__":
    main()

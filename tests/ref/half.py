"""half.py: torch's f32 -> f16 / bf16 rounding on values spanning normals, subnormals, ties,
overflow and specials; test_half.c checks likeness converts bit for bit the same."""
import lkref
import torch

lkref.setup(0)
parts = [
    torch.randn(4096) * 10.0,
    torch.randn(1024) * 1e-5,            # f16 subnormals
    torch.randn(1024) * 1e-7,
    torch.randn(512) * 60000.0,           # around f16 overflow
    torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, float("inf"),
                  float("-inf"), 5.96e-8, 2.98e-8, 2.99e-8, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11,
                  1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 3.4e38, 1e-40]),
]
x = torch.cat(parts).float()
# exact ties for bf16 and f16 built from bit patterns
bits = torch.randint(0, 2 ** 31 - 1, (2048,), dtype=torch.int64)
tie16 = ((bits & ~0x1FFF) | 0x1000).to(torch.int32).view(torch.float32)
tieb = ((bits & ~0xFFFF) | 0x8000).to(torch.int32).view(torch.float32)
x = torch.cat([x, tie16[torch.isfinite(tie16)], tieb[torch.isfinite(tieb)]])
lkref.save(lkref.out_path(), {
    "x": x,
    "f16_bits": x.half().view(torch.int16).to(torch.int32),
    "bf16_bits": x.bfloat16().view(torch.int16).to(torch.int32),
})

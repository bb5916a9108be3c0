"""embedding.py: PyTorch reference for tests/test_embedding.c: token embedding lookup (F32, F16,
BF16 tables) with its dense table gradient, and diffusers' get_timestep_embedding, reimplemented
here step by step in torch (diffusers/models/embeddings.py)."""
import math

import torch

import lkref


def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=False,
                           downscale_freq_shift=1.0, scale=1.0, max_period=10000):
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float32)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


def main():
    path = lkref.out_path()
    lkref.setup(4)
    out = {}
    V, D = 1000, 768
    table = torch.randn(V, D, requires_grad=True)
    ids = torch.randint(0, 990, (2, 77))
    # new-token rows [990, 1000): two used once, one used twice; row 997 never used
    ids[0, 5] = 995
    ids[0, 40] = 995
    ids[1, 3] = 990
    ids[1, 76] = 999
    ids[0, 10] = ids[1, 20]  # a repeated ordinary id as well
    y = torch.nn.functional.embedding(ids, table)
    g = torch.randn(y.shape)
    y.backward(g)
    out.update({"table": table, "ids": ids, "G": g, "out": y, "dtable": table.grad})
    t16 = table.detach().half()
    b16 = table.detach().bfloat16()
    out.update({"table_f16": t16, "out_f16": t16[ids].float(),
                "table_bf16": b16, "out_bf16": b16[ids].float()})
    t = torch.tensor([0.0, 1.0, 999.0, 500.5])
    out["temb320"] = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    out["temb320_noflip"] = get_timestep_embedding(t, 320, flip_sin_to_cos=False,
                                                   downscale_freq_shift=1)
    out["temb7"] = get_timestep_embedding(t, 7, flip_sin_to_cos=True, downscale_freq_shift=0)
    out["temb7_noflip"] = get_timestep_embedding(t, 7, flip_sin_to_cos=False,
                                                 downscale_freq_shift=1)
    out["t"] = t
    lkref.save(path, out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

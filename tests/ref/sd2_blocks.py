"""sd2_blocks.py: PyTorch reference for tests/test_sd2_blocks.c, the Stable Diffusion 2.x
specifics (diffusers/transformers are not installed, so the modules are written here from their
definitions, with the same state_dict names):
  - tr.*: one Transformer2DModel with use_linear_projection (linear proj_in/proj_out), 2 heads of
    64, two BasicTransformerBlocks, cross-attention on 77 tokens of width 48; forward and the
    gradients of <out, G> w.r.t. the input, the context and two weights;
  - te.*: a 3-layer CLIPTextModel with hidden_act "gelu" (OpenCLIP ViT-H style): last hidden
    state, the penultimate layer with and without the final LayerNorm, SD-2 zero padding;
  - un.*: a 3-level UNet2DConditionModel with use_linear_projection and a per-block
    attention_head_dim list [1, 2, 4] (the heads of up block i are the list reversed): forward,
    and the gradients of <out, G> w.r.t. the context and every parameter.
Configs are stored as JSON in the metadata. Weights are random (norm affines included); the
references are evaluated in float64 from the stored float32 weights and inputs."""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import lkref


def randomize(module):
    """PyTorch's default init (uniform +-1/sqrt(fan_in)) for the matrices, with the attention
    logits sharpened (to_q/to_k x2); random norm affines and biases."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias") or name.endswith("embedding.weight"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "to_q" in name or "to_k" in name:
                p.mul_(2.0)


class Attention(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        B, N, C = x.shape
        H, D = self.heads, C // self.heads
        q = self.to_q(x).reshape(B, N, H, D).transpose(1, 2)
        k = self.to_k(ctx).reshape(B, -1, H, D).transpose(1, 2)
        v = self.to_v(ctx).reshape(B, -1, H, D).transpose(1, 2)
        a = torch.softmax((D ** -0.5) * torch.matmul(q, k.transpose(-1, -2)), dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(B, N, C)
        return self.to_out[0](o)


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        h, g = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(g)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim, heads)
        self.attn2 = Attention(dim, ctx_dim, heads)
        self.ff = FeedForward(dim)

    def forward(self, x, ctx):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    def __init__(self, ch, heads, layers, ctx_dim, groups, linear):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        mk = (lambda: nn.Linear(ch, ch)) if linear else (lambda: nn.Conv2d(ch, ch, 1))
        self.proj_in = mk()
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(ch, ctx_dim, heads) for _ in range(layers)])
        self.proj_out = mk()

    def forward(self, x, ctx):
        B, C, H, W = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)
        if self.linear:
            h = self.proj_in(h)
        for blk in self.transformer_blocks:
            h = blk(h, ctx)
        if self.linear:
            h = self.proj_out(h)
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2)
        if not self.linear:
            h = self.proj_out(h)
        return h + x


# ---------------- CLIP text model (HF CLIPTextModel) ----------------

class CLIPAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        B, N, C = x.shape
        H, D = self.heads, C // self.heads
        q = (self.q_proj(x) * D ** -0.5).reshape(B, N, H, D).transpose(1, 2)
        k = self.k_proj(x).reshape(B, N, H, D).transpose(1, 2)
        v = self.v_proj(x).reshape(B, N, H, D).transpose(1, 2)
        mask = torch.full((N, N), torch.finfo(torch.float32).min).triu(1)
        a = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) + mask, dim=-1)
        return self.out_proj(torch.matmul(a, v).transpose(1, 2).reshape(B, N, C))


class CLIPMLP(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class CLIPLayer(nn.Module):
    def __init__(self, d, f, heads):
        super().__init__()
        self.self_attn = CLIPAttention(d, heads)
        self.layer_norm1 = nn.LayerNorm(d)
        self.mlp = CLIPMLP(d, f)
        self.layer_norm2 = nn.LayerNorm(d)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, vocab, d, npos):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.position_embedding = nn.Embedding(npos, d)


class CLIPEncoder(nn.Module):
    def __init__(self, d, f, heads, layers):
        super().__init__()
        self.layers = nn.ModuleList([CLIPLayer(d, f, heads) for _ in range(layers)])


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.embeddings = CLIPEmbeddings(cfg["vocab_size"], d, cfg["max_position_embeddings"])
        self.encoder = CLIPEncoder(d, cfg["intermediate_size"], cfg["num_attention_heads"],
                                   cfg["num_hidden_layers"])
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, ids):
        N = ids.shape[1]
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding(
            torch.arange(N))[None]
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return self.final_layer_norm(x), states


class CLIPTextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.text_model = CLIPTextTransformer(cfg)


# ---------------- UNet2DConditionModel (SD-2 options) ----------------

def timestep_embedding(t, dim, flip, shift):
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Sampler(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(cin, cout), nn.Linear(cout, cout)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class Block(nn.Module):
    pass


class UNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        ch, L, G, eps = c["block_out_channels"], c["layers_per_block"], c["norm_num_groups"], 1e-5
        heads, X, lin = c["attention_head_dim"], c["cross_attention_dim"], c["use_linear_projection"]
        n, T = len(ch), 4 * ch[0]
        self.conv_in = nn.Conv2d(c["in_channels"], ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], T)
        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(c["down_block_types"]):
            inp, out = out, ch[i]
            b = Block()
            b.resnets = nn.ModuleList([ResnetBlock2D(inp if j == 0 else out, out, T, G, eps)
                                       for j in range(L)])
            if kind.startswith("CrossAttn"):
                b.attentions = nn.ModuleList([Transformer2DModel(out, heads[i], 1, X, G, lin)
                                              for _ in range(L)])
            if i < n - 1:
                b.downsamplers = nn.ModuleList([Sampler(out)])
            self.down_blocks.append(b)
        self.mid_block = Block()
        self.mid_block.resnets = nn.ModuleList([ResnetBlock2D(ch[-1], ch[-1], T, G, eps)
                                                for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList([Transformer2DModel(ch[-1], heads[-1], 1, X, G,
                                                                      lin)])
        self.up_blocks = nn.ModuleList()
        rch, rheads = list(reversed(ch)), list(reversed(heads))
        out = rch[0]
        for i, kind in enumerate(c["up_block_types"]):
            prev, out, inp = out, rch[i], rch[min(i + 1, n - 1)]
            b = Block()
            b.resnets = nn.ModuleList([
                ResnetBlock2D((prev if j == 0 else out) + (inp if j == L else out), out, T, G, eps)
                for j in range(L + 1)])
            if kind.startswith("CrossAttn"):
                b.attentions = nn.ModuleList([Transformer2DModel(out, rheads[i], 1, X, G, lin)
                                              for _ in range(L + 1)])
            if i < n - 1:
                b.upsamplers = nn.ModuleList([Sampler(out)])
            self.up_blocks.append(b)
        self.conv_norm_out = nn.GroupNorm(G, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], c["out_channels"], 3, padding=1)

    def forward(self, x, t, ctx):
        c = self.c
        temb = self.time_embedding(
            timestep_embedding(t, c["block_out_channels"][0], True, 0).to(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for b in self.down_blocks:
            for j, r in enumerate(b.resnets):
                h = r(h, temb)
                if hasattr(b, "attentions"):
                    h = b.attentions[j](h, ctx)
                skips.append(h)
            if hasattr(b, "downsamplers"):
                h = F.conv2d(h, b.downsamplers[0].conv.weight, b.downsamplers[0].conv.bias,
                             stride=2, padding=1)
                skips.append(h)
        m = self.mid_block
        h = m.resnets[1](m.attentions[0](m.resnets[0](h, temb), ctx), temb)
        for b in self.up_blocks:
            for j, r in enumerate(b.resnets):
                h = r(torch.cat([h, skips.pop()], dim=1), temb)
                if hasattr(b, "attentions"):
                    h = b.attentions[j](h, ctx)
            if hasattr(b, "upsamplers"):
                h = b.upsamplers[0].conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def prefixed(module, prefix):
    return {prefix + k: v.detach().clone() for k, v in module.state_dict().items()}


def main():
    out = lkref.out_path()
    lkref.setup(0)
    T = {}

    # Transformer2DModel, linear projections, 2 heads x 64, 2 blocks, 7x5 positions
    tr = Transformer2DModel(128, 2, 2, 48, 32, True)
    randomize(tr)
    T.update(prefixed(tr, "tr.w."))
    x = torch.randn(2, 128, 7, 5)
    ctx = torch.randn(2, 77, 48)
    G = torch.randn(2, 128, 7, 5)
    tr.double()
    x64, c64 = x.double().requires_grad_(), ctx.double().requires_grad_()
    y = tr(x64, c64)
    (y * G.double()).sum().backward()
    T.update({"tr.x": x, "tr.ctx": ctx, "tr.out": y.detach().float(), "tr.G": G,
              "tr.dx": x64.grad.float(), "tr.dctx": c64.grad.float(),
              "tr.dproj_in": tr.proj_in.weight.grad.float(),
              "tr.dto_k": tr.transformer_blocks[1].attn2.to_k.weight.grad.float()})

    # CLIP text model with gelu, SD-2 zero padding after EOS
    te_cfg = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3,
              "num_attention_heads": 2, "max_position_embeddings": 77, "vocab_size": 1000,
              "hidden_act": "gelu", "layer_norm_eps": 1e-5}
    te = CLIPTextModel(te_cfg)
    randomize(te)
    ids = torch.zeros(3, 77, dtype=torch.int64)
    for b, n in enumerate((5, 30, 75)):
        ids[b, 0] = 998
        ids[b, 1:n + 1] = torch.randint(1, 997, (n,))
        ids[b, n + 1] = 999
    T.update(prefixed(te, "te.w."))
    te.double()
    with torch.no_grad():
        last, states = te.text_model(ids)
        pen = states[-2]
        T.update({"te.ids": ids, "te.last": last.float(), "te.penultimate": pen.float(),
                  "te.penultimate_norm": te.text_model.final_layer_norm(pen).float()})

    # UNet with SD-2 options
    un_cfg = {"in_channels": 4, "out_channels": 4, "block_out_channels": [64, 64, 128],
              "layers_per_block": 1, "down_block_types": ["CrossAttnDownBlock2D",
              "CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D",
              "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 48,
              "attention_head_dim": [1, 2, 4], "use_linear_projection": True,
              "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0,
              "upcast_attention": True, "num_attention_heads": None}
    un = UNet(un_cfg)
    randomize(un)
    T.update(prefixed(un, "un.w."))
    un.double()
    xs = torch.randn(2, 4, 8, 12)
    ts = torch.tensor([999, 261], dtype=torch.int64)
    cs = torch.randn(2, 77, 48)
    c64 = cs.double().requires_grad_()
    y = un(xs.double(), ts, c64)
    G = torch.randn(y.shape)
    (y * G.double()).sum().backward()
    T.update({"un.x": xs, "un.t": ts, "un.ctx": cs, "un.out": y.detach().float(), "un.G": G,
              "un.dctx": c64.grad.float()})
    T.update({"un.grad." + k: p.grad.float() for k, p in un.named_parameters()})

    lkref.save(out, T, {"te_config": json.dumps(te_cfg), "unet_config": json.dumps(un_cfg)})


if __name__ == "__main__":
    main()

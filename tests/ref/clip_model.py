"""clip_model.py: PyTorch reference for tests/test_clip_model.c: CLIP's contrastive loss
(Radford et al. 2021, as open_clip's ClipLoss and HF CLIPModel compute it) in float64 from
float32 inputs: rows L2-normalized, logits = exp(logit_scale).clamp(max=100) * img @ txt.T,
loss = (CE(logits, arange) + CE(logits.T, arange)) / 2, its gradients with respect to img, txt
and logit_scale, and the in-batch retrieval accuracy (rows and columns whose argmax is the
diagonal)."""
import math

import torch
import torch.nn.functional as F

import lkref

# name: (B, E, logit_scale, how txt relates to img)
#   "rand": independent; "near": txt = img + 0.3 noise (every pair matched);
#   "half": the first half of the rows matched, the rest independent
LOG_INV_T = math.log(1.0 / 0.07)
CASES = {
    "b1_e5": (1, 5, LOG_INV_T, "rand"),
    "b1_e32": (1, 32, LOG_INV_T, "rand"),
    "b3_e5": (3, 5, LOG_INV_T, "rand"),
    "b3_e32": (3, 32, LOG_INV_T, "near"),
    "b16_e5": (16, 5, LOG_INV_T, "half"),
    "b16_e32": (16, 32, LOG_INV_T, "rand"),
    "b16_e32_near": (16, 32, LOG_INV_T, "near"),
    "b16_e32_half": (16, 32, 2.0, "half"),
    # unit temperature and a negative logit_scale (s < 1)
    "b3_e5_s0": (3, 5, 0.0, "rand"),
    "b16_e5_neg": (16, 5, -1.5, "half"),
    # clamped: exp(logit_scale) > 100, so s = 100 and d/dlogit_scale = 0
    "b3_e32_clamp": (3, 32, math.log(250.0), "half"),
    "b16_e32_clamp": (16, 32, 6.0, "near"),
}


def make(B, E, how):
    img = torch.randn(B, E) * 2.0
    noise = torch.randn(B, E)
    if how == "rand":
        txt = noise
    elif how == "near":
        txt = img + 0.3 * noise
    else:
        txt = noise.clone()
        h = (B + 1) // 2
        txt[:h] = img[:h] + 0.2 * noise[:h]
    return img, txt


def main():
    path = lkref.out_path()
    lkref.setup(11)
    res = {}
    for name, (B, E, ls, how) in CASES.items():
        img, txt = make(B, E, how)
        ls32 = torch.tensor([ls], dtype=torch.float32)
        i64 = img.double().requires_grad_()
        t64 = txt.double().requires_grad_()
        l64 = ls32.double().requires_grad_()
        scale = l64.exp().clamp(max=100.0)
        logits = scale * F.normalize(i64, dim=-1) @ F.normalize(t64, dim=-1).t()
        labels = torch.arange(B)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        loss.backward()
        with torch.no_grad():
            hits = (logits.argmax(dim=1) == labels).sum() + (logits.argmax(dim=0) == labels).sum()
            acc = hits.double() / (2 * B)
        res[name + ".img"] = img
        res[name + ".txt"] = txt
        res[name + ".logit_scale"] = ls32
        res[name + ".loss"] = loss.detach().float().reshape(1)
        res[name + ".dimg"] = i64.grad.float()
        res[name + ".dtxt"] = t64.grad.float()
        res[name + ".dlogit_scale"] = l64.grad.float()
        res[name + ".acc"] = acc.float().reshape(1)
    lkref.save(path, res, {"torch": torch.__version__, "cases": ",".join(CASES)})


if __name__ == "__main__":
    main()

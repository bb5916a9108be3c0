"""optim.py: reference for tests/test_optim.c -- torch.optim.AdamW / SGD (1.13, foreach=False),
torch.nn.utils.clip_grad_norm_, diffusers' get_scheduler lambdas through LambdaLR, and
diffusers' EMAModel update, on a set of parameters with odd and Stable Diffusion 1.5 shapes."""
import math

import numpy as np
import torch

import lkref

# name, full shape, trainable rows (lo, hi) or None. The same list is in test_optim.c.
PARAMS = [
    ("a", (3,), None),
    ("b", (7, 5), None),
    ("c", (2, 3, 3, 3), None),
    ("d", (37,), None),
    ("e", (10, 6), (7, 9)),                 # row-subset leaf, rows after hi stay frozen too
    ("attn_q", (320, 320), None),           # SD 1.5 attention projection
    ("conv_in", (320, 4, 3, 3), None),      # SD 1.5 conv_in
    ("lora_down", (4, 320), None),          # LoRA rank 4 on a 320-wide projection
    ("lora_up", (320, 4), None),
    ("time_bias", (1280,), None),
    ("one", (1, 1), None),
    ("tok", (49409, 768), (49408, 49409)),  # CLIP token embedding + one textual-inversion token
]
STEPS = 5


def f32(x):
    """The f32 value of x as a Python float (the C side holds its hyper-parameters in f32)."""
    return float(np.float32(x))


ADAMW = dict(lr=f32(5e-4), beta1=f32(0.9), beta2=f32(0.999), eps=f32(1e-8), wd=f32(1e-2))
ADAMW_LRS = [f32(1e-3), f32(2e-3), -1.0, f32(1e-3), f32(3e-3)]  # -1: the config's lr
SGDS = [  # lr, momentum, dampening, weight_decay, nesterov
    (f32(1e-2), f32(0.9), f32(0.1), f32(1e-2), 0.0),
    (f32(5e-3), f32(0.9), 0.0, f32(1e-3), 1.0),
    (f32(2e-2), 0.0, 0.0, 0.0, 0.0),
]
EMAS = [(f32(0.99), 1.0), (f32(0.9), 0.0)]  # decay, warmup


def trainable(shape, rows):
    return (rows[1] - rows[0],) + tuple(shape[1:]) if rows else shape


def diffusers_lambda(kind, num_warmup_steps, num_training_steps, num_cycles=0.5):
    """diffusers.optimization lr_lambda closures, verbatim in behaviour."""
    if kind == "constant":
        return lambda _: 1
    if kind == "constant_with_warmup":
        def lr_lambda(current_step):
            if current_step < num_warmup_steps:
                return float(current_step) / float(max(1.0, num_warmup_steps))
            return 1.0
        return lr_lambda
    if kind == "linear":
        def lr_lambda(current_step):
            if current_step < num_warmup_steps:
                return float(current_step) / float(max(1, num_warmup_steps))
            return max(0.0, float(num_training_steps - current_step) /
                       float(max(1, num_training_steps - num_warmup_steps)))
        return lr_lambda

    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / \
            float(max(1, num_training_steps - num_warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    return lr_lambda


class EMAModel:
    """diffusers.training_utils.EMAModel.step/get_decay with default arguments
    (update_after_step=0, use_ema_warmup=False, min_decay=0); warmup=False is a plain EMA."""

    def __init__(self, params, decay, warmup):
        self.shadow = [p.clone().detach() for p in params]
        self.decay, self.warmup, self.optimization_step = decay, warmup, 0

    def get_decay(self, optimization_step):
        step = max(0, optimization_step - 0 - 1)
        if step <= 0:
            return 0.0
        cur = (1 + step) / (10 + step)
        return max(min(cur, self.decay), 0.0)

    @torch.no_grad()
    def step(self, params):
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step) if self.warmup else self.decay
        one_minus_decay = 1 - decay
        for s, p in zip(self.shadow, params):
            s.sub_(one_minus_decay * (s - p))


def main():
    out = lkref.out_path()
    lkref.setup(1234)
    T = {}
    init, grads = [], [[] for _ in range(STEPS)]
    for i, (name, shape, rows) in enumerate(PARAMS):
        ts = trainable(shape, rows)
        x = torch.randn(ts)
        init.append(x)
        T["init.%d" % i] = x
        for k in range(STEPS):
            g = torch.randn(ts) * (0.1 * (i + 1))
            if k == 1 and i == 2:
                g[0] = 0.0  # an exactly-zero gradient slice
            grads[k].append(g)
            T["grad.%d.%d" % (k, i)] = g
    T["hp.adamw"] = torch.tensor([ADAMW["lr"], ADAMW["beta1"], ADAMW["beta2"], ADAMW["eps"],
                                  ADAMW["wd"]], dtype=torch.float32)
    T["hp.adamw_lrs"] = torch.tensor(ADAMW_LRS, dtype=torch.float32)

    # AdamW: the trainable rows of a row-subset leaf are a tensor of their own here, so torch's
    # weight decay touches only them (as the C side, which never touches frozen rows).
    ps = [x.clone().requires_grad_(True) for x in init]
    opt = torch.optim.AdamW(ps, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]),
                            eps=ADAMW["eps"], weight_decay=ADAMW["wd"], foreach=False)
    for k in range(STEPS):
        opt.param_groups[0]["lr"] = ADAMW["lr"] if ADAMW_LRS[k] < 0 else ADAMW_LRS[k]
        for p, g in zip(ps, grads[k]):
            p.grad = g.clone()
        opt.step()
        for i, p in enumerate(ps):
            T["adamw.p.%d.%d" % (k, i)] = p.detach().clone()
    for i, p in enumerate(ps):
        T["adamw.m.%d" % i] = opt.state[p]["exp_avg"].clone()
        T["adamw.v.%d" % i] = opt.state[p]["exp_avg_sq"].clone()

    # the kernel alone with a large lr and decay, so that any formula slip exceeds 1e-6 (with
    # lr 1e-3 an update is ~1e-3 and a relative slip of 1e-4 would stay below it)
    KERN = dict(lr=f32(0.25), beta1=f32(0.8), beta2=f32(0.99), eps=f32(1e-6), wd=f32(0.1))
    T["hp.kern"] = torch.tensor([KERN["lr"], KERN["beta1"], KERN["beta2"], KERN["eps"],
                                 KERN["wd"]], dtype=torch.float32)
    for i in (3, 5):
        p = init[i].clone().requires_grad_(True)
        opt = torch.optim.AdamW([p], lr=KERN["lr"], betas=(KERN["beta1"], KERN["beta2"]),
                                eps=KERN["eps"], weight_decay=KERN["wd"], foreach=False)
        for k in range(2):
            p.grad = grads[k][i].clone()
            opt.step()
            T["kern.p.%d.%d" % (k, i)] = p.detach().clone()

    # SGD variants
    for j, (lr, mom, damp, wd, nest) in enumerate(SGDS):
        T["hp.sgd%d" % j] = torch.tensor([lr, mom, damp, wd, nest], dtype=torch.float32)
        ps = [x.clone().requires_grad_(True) for x in init]
        opt = torch.optim.SGD(ps, lr=lr, momentum=mom, dampening=damp, weight_decay=wd,
                              nesterov=bool(nest), foreach=False)
        for k in range(STEPS):
            for p, g in zip(ps, grads[k]):
                p.grad = g.clone()
            opt.step()
        for i, p in enumerate(ps):
            T["sgd%d.p.%d" % (j, i)] = p.detach().clone()
            if mom != 0:
                T["sgd%d.buf.%d" % (j, i)] = opt.state[p]["momentum_buffer"].clone()

    # clip_grad_norm_: once clipping (max_norm 1), once not (coefficient clamps to 1)
    for j, max_norm in enumerate([1.0, 1e6]):
        ps = [x.clone().requires_grad_(True) for x in init]
        for p, g in zip(ps, grads[0]):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        T["clip%d.norm" % j] = norm.reshape(1).float()
        T["clip%d.maxnorm" % j] = torch.tensor([max_norm], dtype=torch.float32)
        for i, p in enumerate(ps):
            T["clip%d.g.%d" % (j, i)] = p.grad.clone()

    # schedules: (warmup, total) cases, steps 0..119 (past total too)
    base_lr = f32(1e-4)
    cases = [(10, 100), (0, 50), (7, 5)]
    T["lr.cases"] = torch.tensor([[w, t] for w, t in cases], dtype=torch.int64)
    T["lr.base"] = torch.tensor([base_lr], dtype=torch.float32)
    for kind in ["constant", "constant_with_warmup", "linear", "cosine"]:
        for c, (warm, total) in enumerate(cases):
            opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, diffusers_lambda(kind, warm, total))
            lrs = []
            for _ in range(120):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            T["lr.%s.%d" % (kind, c)] = torch.tensor(lrs, dtype=torch.float64).float()

    # EMA of the AdamW trajectory: update after every step, on torch's parameters
    for j, (decay, warm) in enumerate(EMAS):
        T["hp.ema%d" % j] = torch.tensor([decay, warm], dtype=torch.float32)
        ema = EMAModel(init, decay, bool(warm))
        for k in range(STEPS):
            ema.step([T["adamw.p.%d.%d" % (k, i)] for i in range(len(PARAMS))])
            for i, s in enumerate(ema.shadow):
                T["ema%d.s.%d.%d" % (j, k, i)] = s.clone()

    lkref.save(out, T, {"params": str(len(PARAMS)), "steps": str(STEPS)})


if __name__ == "__main__":
    main()

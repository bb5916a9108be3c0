"""torch_ops.py: the PyTorch side of bench/lk_bench_ops. Reads one JSON case per line on stdin
(written by the C program, the single source of the case list), times the same op in PyTorch
(forward, and backward as autograd.grad of the output with a random upstream gradient), and
writes one JSON line per case: {"name", "fwd_ms", "bwd_ms", "peak_mb"}. Run with Debian's
/usr/bin/python3 (python3-torch 1.13)."""
import json
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.manual_seed(0)


def rss_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def median_ms(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 1e3 * ts[len(ts) // 2]


def attention(q, k, v, heads, scale):
    B, Nq, C = q.shape
    Nk = k.shape[1]
    D = C // heads
    q = q.reshape(B, Nq, heads, D).permute(0, 2, 1, 3).reshape(B * heads, Nq, D)
    k = k.reshape(B, Nk, heads, D).permute(0, 2, 1, 3).reshape(B * heads, Nk, D)
    v = v.reshape(B, Nk, heads, D).permute(0, 2, 1, 3).reshape(B * heads, Nk, D)
    # diffusers' AttnProcessor (baddbmm replaced: Debian's torch 1.13 NaN bug with beta=0)
    p = (scale * torch.matmul(q, k.transpose(-1, -2))).softmax(-1)
    o = torch.matmul(p, v)
    return o.reshape(B, heads, Nq, D).permute(0, 2, 1, 3).reshape(B, Nq, C)


def build(c):
    """returns (inputs requiring grad, forward fn)"""
    op = c["op"]
    r = lambda *s: torch.randn(*s, requires_grad=True)
    if op == "linear":
        x, w, b = r(c["M"], c["K"]), r(c["N"], c["K"]), r(c["N"])
        return [x, w, b], lambda: F.linear(x, w, b)
    if op == "conv2d":
        x = r(c["B"], c["Cin"], c["H"], c["W"])
        w = r(c["Cout"], c["Cin"], c["k"], c["k"])
        b = r(c["Cout"])
        return [x, w, b], lambda: F.conv2d(x, w, b, stride=c["s"], padding=c["p"])
    if op in ("groupnorm", "groupnorm_silu"):
        x = r(c["B"], c["C"], c["H"], c["W"])
        w, b = r(c["C"]), r(c["C"])
        if op == "groupnorm":
            return [x, w, b], lambda: F.group_norm(x, c["G"], w, b, 1e-5)
        return [x, w, b], lambda: F.silu(F.group_norm(x, c["G"], w, b, 1e-5))
    if op == "layernorm":
        x, w, b = r(c["N"], c["C"]), r(c["C"]), r(c["C"])
        return [x, w, b], lambda: F.layer_norm(x, (c["C"],), w, b, 1e-5)
    if op == "act":
        x = r(c["n"])
        f = {"silu": F.silu, "gelu": F.gelu,
             "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
             "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}[c["kind"]]
        return [x], lambda: f(x)
    if op == "geglu":
        x = r(c["M"], 2 * c["D"])
        def g():
            h, gate = x.chunk(2, dim=-1)
            return h * F.gelu(gate)
        return [x], g
    if op == "softmax":
        x = r(c["M"], c["N"])
        return [x], lambda: x.softmax(-1)
    if op == "attention":
        C = c["H"] * c["D"]
        q, k, v = r(c["B"], c["Nq"], C), r(c["B"], c["Nk"], C), r(c["B"], c["Nk"], C)
        s = c["D"] ** -0.5
        return [q, k, v], lambda: attention(q, k, v, c["H"], s)
    if op == "upsample":
        x = r(c["B"], c["C"], c["H"], c["W"])
        return [x], lambda: F.interpolate(x, scale_factor=2.0, mode="nearest")
    if op == "avgpool":
        x = r(c["B"], c["C"], c["H"], c["W"])
        return [x], lambda: F.avg_pool2d(x, 2, 2)
    if op == "add_bcast":
        a, b = r(c["B"], c["C"], c["H"], c["W"]), r(c["B"], c["C"], 1, 1)
        return [a, b], lambda: a + b
    if op == "mul":
        a, b = r(c["n"]), r(c["n"])
        return [a, b], lambda: a * b
    if op == "concat":
        a, b = r(c["B"], c["C1"], c["H"], c["W"]), r(c["B"], c["C2"], c["H"], c["W"])
        return [a, b], lambda: torch.cat([a, b], 1)
    if op == "embedding":
        t = r(c["V"], c["D"])
        ids = torch.randint(0, c["V"], (c["n"],))
        return [t], lambda: F.embedding(ids, t)
    if op == "mse":
        a, b = r(c["n"]), torch.randn(c["n"])
        return [a], lambda: F.mse_loss(a, b)
    if op == "sum":
        x = r(c["n"])
        return [x], lambda: x.sum()
    if op == "adamw":
        p = torch.nn.Parameter(torch.randn(c["n"]))
        p.grad = torch.randn(c["n"])
        opt = torch.optim.AdamW([p], lr=1e-3, foreach=False)
        return None, lambda: opt.step()
    raise ValueError("unknown op " + op)


def main():
    for line in sys.stdin:
        c = json.loads(line)
        rss_reset()
        base = status_kb("VmRSS")
        ins, fwd = build(c)
        reps = c.get("reps", 5)
        if ins is None:
            with torch.no_grad():
                f_ms = median_ms(fwd, reps)
            b_ms = -1
        else:
            f_ms = median_ms(lambda: fwd().detach(), reps)
            y = fwd()
            dy = torch.randn_like(y)

            def bw():
                yy = fwd()
                torch.autograd.grad(yy, ins, dy)
            # backward alone: time forward+backward minus forward
            fb = median_ms(bw, reps)
            b_ms = max(fb - f_ms, 0.0)
            del y
        peak = (status_kb("VmHWM") - base) / 1024.0
        print(json.dumps({"name": c["name"], "fwd_ms": f_ms, "bwd_ms": b_ms,
                          "peak_mb": peak}), flush=True)


if __name__ == "__main__":
    main()

"""conv2d.py: PyTorch reference for tests/test_conv2d.c: nn.functional.conv2d (NCHW, zero
padding) on the SD-1.5 shapes and odd ones, with F32 weights and with F16/BF16-rounded weights
(the same rounded values on both sides); forward and every gradient. The reference is computed in
float64 from the float32 inputs, so the C test measures its own error; the error torch's own
float32 convolution makes on the same case is printed for comparison. Inputs are not stored (both
sides generate them with the harness's lk_t_fill_uniform); half weights are stored rounded."""
import numpy as np
import torch
import torch.nn.functional as F

import lkref


uni = lkref.uni


# (name, B, Cin, H, W, Cout, kernel, stride, pad, bias, weight dtype); must match CASES in
# tests/test_conv2d.c
CASES = [("sd320", 1, 320, 64, 64, 320, 3, 1, 1, True, "F32"),
         ("sd640", 1, 640, 32, 32, 640, 3, 1, 1, True, "F32"),
         ("sd1280", 1, 1280, 16, 16, 1280, 3, 1, 1, True, "F32"),
         ("conv_in", 1, 4, 64, 64, 320, 3, 1, 1, True, "F32"),
         ("down320", 1, 320, 64, 64, 320, 3, 2, 1, True, "F32"),
         ("proj1x1", 1, 640, 32, 32, 320, 1, 1, 0, True, "F32"),
         ("img1x1", 3, 3, 1, 1, 5, 3, 1, 1, True, "F32"),
         ("k5", 2, 4, 7, 9, 6, 5, 1, 2, True, "F32"),
         ("s2p0", 2, 5, 9, 7, 6, 3, 2, 0, True, "F32"),
         ("s2p1", 2, 5, 9, 7, 6, 3, 2, 1, True, "F32"),
         ("k1s2", 2, 7, 9, 7, 5, 1, 2, 0, False, "F32"),
         ("k2", 1, 6, 8, 9, 4, 2, 1, 0, True, "F32"),
         ("k4s2", 1, 17, 11, 13, 19, 4, 2, 1, True, "F32"),
         ("wino_odd", 3, 33, 13, 11, 17, 3, 1, 1, True, "F32"),
         ("wino_p0", 1, 16, 6, 5, 40, 3, 1, 0, False, "F32"),
         ("wino_p2", 2, 24, 5, 6, 16, 3, 1, 2, True, "F32"),
         ("wino_p3", 1, 16, 4, 7, 18, 3, 1, 3, True, "F32"),
         ("wino_1x1img", 2, 20, 1, 1, 24, 3, 1, 1, True, "F32"),
         ("wino_bands", 1, 16, 256, 256, 16, 3, 1, 1, True, "F32"),
         ("wino_s2_odd", 2, 17, 9, 11, 19, 3, 2, 1, True, "F32"),
         ("wino_s2_p0", 1, 16, 8, 7, 24, 3, 2, 0, False, "F32"),
         ("wino_s2_bands", 1, 16, 320, 320, 16, 3, 2, 1, True, "F32"),
         ("f16_wino_s2", 1, 20, 6, 5, 16, 3, 2, 1, True, "F16"),
         ("f16_wino", 2, 20, 9, 11, 24, 3, 1, 1, True, "F16"),
         ("bf16_wino", 1, 17, 10, 7, 19, 3, 1, 1, True, "BF16"),
         ("f16_s2", 1, 9, 8, 8, 7, 3, 2, 1, True, "F16"),
         ("bf16_1x1", 2, 12, 5, 6, 10, 1, 1, 0, False, "BF16")]
# weight gradients larger than this many elements are stored for their first DW_ROWS output
# channels only (the 1280x1280x3x3 one would be 59 MB); the C test compares the same rows
DW_BIG, DW_ROWS = 1 << 22, 160
HALF = {"F16": torch.float16, "BF16": torch.bfloat16}


def main():
    lkref.setup(0)
    out = {}
    for i, (name, B, Cin, H, W, Cout, k, s, p, bias, wdt) in enumerate(CASES):
        seed = 9000 + 10 * i
        x = uni((B, Cin, H, W), -1.0, 1.0, seed)
        lim = 1.0 / (Cin * k * k) ** 0.5
        w = uni((Cout, Cin, k, k), -lim, lim, seed + 1)
        if wdt in HALF:
            wh = w.to(HALF[wdt])
            out[f"{name}.w"] = wh
            w = wh.float()
        b = uni((Cout,), -0.5, 0.5, seed + 2) if bias else None
        OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        dy = uni((B, Cout, OH, OW), -1.0, 1.0, seed + 3)
        xd = x.double().requires_grad_(True)
        wd = w.double().requires_grad_(wdt == "F32")
        bd = b.double().requires_grad_(True) if bias else None
        y = F.conv2d(xd, wd, bd, s, p)
        y.backward(dy.double())
        out[f"{name}.y"] = y.float()
        out[f"{name}.dx"] = xd.grad.float()
        if wdt == "F32":
            dw = wd.grad.float()
            out[f"{name}.dw"] = dw[:DW_ROWS] if dw.numel() > DW_BIG else dw
        if bias:
            out[f"{name}.db"] = bd.grad.float()
        if Cin * Cout >= 320 * 320:
            y32 = F.conv2d(x, w, b, s, p).double()
            err = ((y32 - y).abs().max() / y.abs().max()).item()
            print(f"{name}: torch float32 forward max error / max |y| = {err:.2e}")
    lkref.save(lkref.out_path(), out, {"torch": torch.__version__})


if __name__ == "__main__":
    main()

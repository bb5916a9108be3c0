"""image.py: references for tests/test_image.c.

- resize: torch F.interpolate(mode="area") for integer factors, and direct dense float64
  implementations of Lanczos-3 (PIL's convention: kernel widened by the downscale factor,
  sampled at pixel centres, rows renormalised) and of true area averaging for other ratios;
  PIL's own Image.LANCZOS on an 8-bit image (it rounds between passes, so the test allows +-2).
- files written and decoded by PIL (libjpeg-turbo, libpng, libwebp underneath): JPEG baseline,
  progressive, gray, Adobe CMYK, EXIF orientations 1-8 (ImageOps.exif_transpose), PNG palette +
  tRNS, gray+alpha, 1-bit, text chunks (tEXt, zTXt, iTXt; expected values in the metadata),
  WebP lossy+alpha and lossless. Stored as U8 tensors "<name>.file" (bytes) and "<name>.px"
  (H, W, C) expected pixels.
- torchvision's RandomCrop / RandomHorizontalFlip draws (torch.randint, torch.rand).
Inputs shared with C come from lk_t_fill_uniform (resample.uni)."""
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin

import lkref
from resample import uni

# (name, (C, H, W), (OH, OW)); must match tests/test_image.c
AREA = [("f2", (3, 8, 12), (4, 6)), ("f3", (2, 9, 6), (3, 2)), ("f4x2", (1, 16, 10), (4, 5)),
        ("f1", (1, 5, 7), (5, 7)), ("sd", (3, 64, 48), (32, 24))]
AREA_FRAC = [("5to3", (2, 5, 10), (3, 4)), ("7to2", (1, 7, 7), (2, 3)), ("up3to5", (1, 3, 3), (5, 5))]
LANCZOS = [("down37x23", (2, 23, 37), (10, 16)), ("down64to24", (1, 64, 64), (24, 24)),
           ("up7x5", (1, 5, 7), (11, 19)), ("to1", (1, 5, 6), (1, 1)), ("from1", (1, 1, 1), (3, 4)),
           ("mixed", (3, 30, 12), (45, 5)), ("same", (1, 6, 9), (6, 9)),
           ("big", (1, 300, 200), (77, 123))]
PIL_LANCZOS = [("down", (40, 30), (17, 13)), ("up", (40, 30), (55, 41)), ("odd", (40, 30), (29, 7))]
# (seed, resized H, resized W, target) for the crop/flip draws
DRAWS = [(0, 21, 16, 16), (1, 16, 40, 16), (7, 100, 64, 64), (123, 513, 512, 512)]


def lanczos3(x):
    x = np.abs(x)
    return np.where(x < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def lanczos_matrix(n_in, n_out):
    if n_in == n_out:
        return np.eye(n_in)
    scale = n_in / n_out
    fs = max(scale, 1.0)
    j = np.arange(n_in) + 0.5
    W = np.zeros((n_out, n_in))
    for i in range(n_out):
        c = (i + 0.5) * scale
        W[i] = lanczos3((j - c) / fs)
        W[i] /= W[i].sum()
    return W


def area_matrix(n_in, n_out):
    s = n_in / n_out
    W = np.zeros((n_out, n_in))
    for i in range(n_out):
        a, b = i * s, (i + 1) * s
        for j in range(n_in):
            W[i, j] = max(0.0, min(b, j + 1) - max(a, j))
        W[i] /= W[i].sum()
    return W


def separable(x, Wh, Ww):
    x = x.astype(np.float64)
    return np.einsum("oh,chw,pw->cop", Wh, x, Ww).astype(np.float32)


def u8(a):
    return torch.from_numpy(np.array(a, dtype=np.uint8))


def pattern(w, h):
    """A smooth, asymmetric RGB test picture (gradients + a bright block in one corner)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 40 + 180 * x / max(w - 1, 1)
    g = 30 + 160 * y / max(h - 1, 1)
    b = 128 + 60 * np.sin(x / 5.0) * np.cos(y / 4.0)
    img = np.stack([r, g, b], -1)
    img[: h // 3, : w // 4] = (250, 20, 30)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def add_file(out, name, data, im):
    out[name + ".file"] = u8(np.frombuffer(data, dtype=np.uint8).copy())
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    out[name + ".px"] = u8(a)


def save(im, fmt, **kw):
    f = io.BytesIO()
    im.save(f, fmt, **kw)
    return f.getvalue()


def files(out, meta):
    base = Image.fromarray(pattern(45, 29), "RGB")
    for name, kw in [("jpeg.rgb", dict(quality=90)), ("jpeg.prog", dict(quality=85, progressive=True)),
                     ("jpeg.q100_444", dict(quality=100, subsampling=0))]:
        data = save(base, "JPEG", **kw)
        add_file(out, name, data, Image.open(io.BytesIO(data)).convert("RGB"))
    data = save(base.convert("L"), "JPEG", quality=90)
    add_file(out, "jpeg.gray", data, Image.open(io.BytesIO(data)).convert("RGB"))
    cmyk = Image.fromarray(np.concatenate([pattern(45, 29), pattern(45, 29)[:, :, :1] // 2], -1), "CMYK")
    data = save(cmyk, "JPEG", quality=95)
    assert b"Adobe" in data
    add_file(out, "jpeg.cmyk", data, Image.open(io.BytesIO(data)).convert("RGB"))
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        data = save(base, "JPEG", quality=90, exif=ex.tobytes())
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        add_file(out, "jpeg.o%d" % o, data, im)

    rng = np.random.RandomState(5)
    pal = Image.fromarray(rng.randint(0, 16, (13, 11)).astype(np.uint8), "P")
    pal.putpalette(list(rng.randint(0, 256, 48)))
    data = save(pal, "PNG", transparency=bytes(list(rng.randint(0, 256, 16))), bits=4)
    add_file(out, "png.pal_trns", data, Image.open(io.BytesIO(data)).convert("RGBA"))
    la = Image.fromarray(rng.randint(0, 256, (9, 14, 2)).astype(np.uint8), "LA")
    data = save(la, "PNG")
    add_file(out, "png.la", data, Image.open(io.BytesIO(data)).convert("RGBA"))
    bw = Image.fromarray(rng.randint(0, 2, (7, 19)).astype(bool))
    data = save(bw, "PNG")
    add_file(out, "png.bw", data, Image.open(io.BytesIO(data)).convert("RGB"))
    info = PngImagePlugin.PngInfo()
    texts = [("parameters", "a photo of sks dog\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, "
              "CFG scale: 7, Seed: 42, Size: 512x512"),
             ("Comment", "caf\u00e9 latin-1"), ("Title", "\u65e5\u672c\u8a9e \u2615 prompt"),
             ("Software", "zipped " * 40)]
    info.add_text(*texts[0])
    info.add_text(*texts[1])
    info.add_itxt(*texts[2])
    info.add_text(texts[3][0], texts[3][1], zip=True)
    data = save(base, "PNG", pnginfo=info)
    add_file(out, "png.text", data, Image.open(io.BytesIO(data)).convert("RGB"))
    for k, v in texts:
        meta["png.text." + k] = v

    rgba = Image.fromarray(np.concatenate([pattern(45, 29), (np.arange(45 * 29) % 256).astype(np.uint8)
                                           .reshape(29, 45, 1)], -1), "RGBA")
    data = save(rgba, "WEBP", quality=80)
    add_file(out, "webp.lossy_alpha", data, Image.open(io.BytesIO(data)).convert("RGBA"))
    data = save(rgba, "WEBP", lossless=True)
    add_file(out, "webp.lossless", data, Image.open(io.BytesIO(data)).convert("RGBA"))
    data = save(base, "WEBP", quality=90)
    add_file(out, "webp.lossy", data, Image.open(io.BytesIO(data)).convert("RGB"))


def main():
    lkref.setup(0)
    out, meta = {}, {"torch": torch.__version__}
    for i, (name, shape, (oh, ow)) in enumerate(AREA):
        x = uni(shape, 0.0, 255.0, 5000 + i)
        out["area.%s" % name] = F.interpolate(x[None], size=(oh, ow), mode="area")[0]
    for i, (name, shape, (oh, ow)) in enumerate(AREA_FRAC):
        x = uni(shape, 0.0, 255.0, 5100 + i).numpy()
        out["areafrac.%s" % name] = torch.from_numpy(
            separable(x, area_matrix(shape[1], oh), area_matrix(shape[2], ow)))
    for i, (name, shape, (oh, ow)) in enumerate(LANCZOS):
        x = uni(shape, 0.0, 255.0, 5200 + i).numpy()
        out["lanczos.%s" % name] = torch.from_numpy(
            separable(x, lanczos_matrix(shape[1], oh), lanczos_matrix(shape[2], ow)))
    for i, (name, (w, h), (ow, oh)) in enumerate(PIL_LANCZOS):
        x = np.floor(uni((h, w, 3), 64.0, 192.0, 5300 + i).numpy()).astype(np.uint8)
        y = Image.fromarray(x, "RGB").resize((ow, oh), Image.LANCZOS)
        out["pil_lanczos.%s" % name] = u8(np.asarray(y))
    for seed, nh, nw, t in DRAWS:
        torch.manual_seed(seed)
        i = torch.randint(0, nh - t + 1, size=(1,)).item()
        j = torch.randint(0, nw - t + 1, size=(1,)).item()
        flip = int(torch.rand(1).item() < 0.5)
        out["draws.%d" % seed] = torch.tensor([i, j, flip], dtype=torch.int64)
    files(out, meta)
    lkref.save(lkref.out_path(), out, meta)


if __name__ == "__main__":
    main()

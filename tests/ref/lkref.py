"""lkref.py: shared helpers for the reference scripts (run with Debian's /usr/bin/python3 and
python3-torch). Writes safetensors without the safetensors package (not in Debian 12)."""
import json
import struct
import sys

import numpy as np
import torch

_DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
       torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def save(path, tensors, metadata=None):
    """Write {name: tensor} (contiguous CPU tensors) as a safetensors file, names sorted."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": _DT[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    import os
    os.replace(path + ".tmp", path)


def out_path():
    if len(sys.argv) != 2:
        sys.exit("usage: %s OUT.safetensors" % sys.argv[0])
    return sys.argv[1]


def setup(seed=0):
    torch.manual_seed(seed)
    torch.set_num_threads(2)


def uni(shape, lo, hi, seed):
    """Bit-exact copy of lk_t_fill_uniform (tests/harness.c) as a float32 tensor."""
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        s0 = np.uint64(seed) * np.uint64(0x2545F4914F6CDD1D) + np.uint64(1)
        z = s0 + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    span = np.float64(np.float32(hi) - np.float32(lo))
    x = np.float32(lo) + (u * span).astype(np.float32)
    return torch.from_numpy(x.astype(np.float32)).reshape(shape)

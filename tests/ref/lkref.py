"""lkref.py: shared helpers for the reference scripts (run with Debian's /usr/bin/python3 and
python3-torch). Writes safetensors without the safetensors package (not in Debian 12)."""
import json
import struct
import sys

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

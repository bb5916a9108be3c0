"""bpe_learn.py: reference for tests/test_bpe_learn.c: byte-level BPE learning written plainly
(recount every pair each step), on the same ASCII caption corpus the C test makes. Writes the
expected vocab.json / merges.txt bytes of three settings as U8 tensors.

ASCII only: without the `regex` module (not in Debian's python3) CLIP's pattern is approximated
with [a-z]+ / [0-9] / [^\\sa-z0-9]+, which is exact for lower-cased ASCII text."""
import re

import torch

import lkref

SUBJ = ["dog face", "red apple", "grinning cat", "smiling face with hearts", "thumbs up",
        "party popper", "rocket", "man's hat", "woman's boot", "it's a flag: Japan", "keycap 7",
        "Clock 12 o'clock", "Face-with-tears  of  JOY", "person's (medium) skin tone",
        "pizza & burger", "we'll see  you're done"]
STYLES = ["Noto", "twemoji", "OpenMoji", "fluent 3D"]
N_CAPTIONS = 300
SETTINGS = {"a": (600, 2), "b": (49408, 25), "c": (49408, 1)}  # vocab_size, min_count

PAT = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def corpus():
    """The same captions as make_corpus() in tests/test_bpe_learn.c."""
    out = []
    for i in range(N_CAPTIONS):
        s = "%s emoji, %s style" % (SUBJ[i % len(SUBJ)], STYLES[(i * 7 + i // len(SUBJ)) % len(STYLES)])
        if i % 5 == 0:
            s += " #%d" % (i % 23)
        if i % 11 == 0:
            s = "  " + s.upper() + "\t"
        out.append(s)
    return out


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def pieces(text):
    text = re.sub(r"\s+", " ", text).strip().lower()
    return [p for p in PAT.findall(text) if p not in ("<|startoftext|>", "<|endoftext|>")]


def merge_word(w, a, b):
    out, i = [], 0
    while i < len(w):
        if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(w[i])
            i += 1
    return tuple(out)


def learn(texts, vocab_size, min_count):
    b2u = bytes_to_unicode()
    words = {}
    for t in texts:
        for p in pieces(t):
            raw = p.encode("utf-8")
            if len(raw) > 1024:
                continue
            sym = [b2u[x] for x in raw]
            sym[-1] += "</w>"
            words[tuple(sym)] = words.get(tuple(sym), 0) + 1
    base = sorted(b2u.values())  # bytes_to_unicode's values ordered by code point = CLIP's order
    vocab = base + [c + "</w>" for c in base]
    known = set(vocab)
    merges = []
    n_new = 0
    while n_new < vocab_size - 514 and len(merges) < 49152 - 256 - 2:
        pairs = {}
        for w, c in words.items():
            for i in range(len(w) - 1):
                pairs[(w[i], w[i + 1])] = pairs.get((w[i], w[i + 1]), 0) + c
        cands = [(-c, a, b) for (a, b), c in pairs.items() if len((a + b).encode("utf-8")) <= 256]
        if not cands:
            break
        negc, a, b = min(cands)  # highest count, then smallest (left, right) texts
        if -negc < min_count:
            break
        merges.append((a, b))
        if a + b not in known:
            known.add(a + b)
            vocab.append(a + b)
            n_new += 1
        words = {merge_word(w, a, b): c for w, c in words.items()}
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vj = "{\n" + "".join('"%s": %d%s\n' % (t.replace("\\", "\\\\").replace('"', '\\"'), i,
                                          "," if i + 1 < len(vocab) else "")
                         for i, t in enumerate(vocab)) + "}\n"
    mt = "#version: 0.2\n" + "".join("%s %s\n" % m for m in merges)
    return vj, mt


def u8(s):
    return torch.tensor(list(s.encode("utf-8")), dtype=torch.uint8)


def main():
    path = lkref.out_path()
    texts = corpus()
    out = {"corpus": u8("\n".join(texts))}
    for name, (vs, mc) in SETTINGS.items():
        vj, mt = learn(texts, vs, mc)
        out["vocab_" + name] = u8(vj)
        out["merges_" + name] = u8(mt)
    lkref.save(path, out)


if __name__ == "__main__":
    main()

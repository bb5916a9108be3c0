#!/usr/bin/python3
# EmojiBench data-set builder (issue 5, "Data set"): four emoji styles (Noto Color Emoji,
# Fluent Emoji 3D, Twemoji, OpenMoji) composited on white at 64x64 and 128x128, plus manifest.json.
"""Build the EmojiBench image set.

Inputs (installed by build.sh): Debian fonts-noto-color-emoji, unicode-data, unicode-cldr-core,
librsvg2-bin (rsvg-convert), and the npm packages @lobehub/fluent-emoji-3d, @twemoji/svg, openmoji
in NPM_DIR/node_modules.

Output (OUT_DIR, never inside the repo):
  STYLE/128/KEY.png, STYLE/64/KEY.png  for STYLE in noto, fluent3d, twemoji, openmoji
  manifest.json
KEY is the normalized codepoint sequence: lower-case hex joined by '-', with U+FE0F/U+FE0E removed
(e.g. 1f436, 1f468-200d-1f373, 0023-20e3). The fully-qualified sequence from emoji-test.txt is kept
in the manifest as "codepoints". Only sequences listed in emoji-test.txt (fully-qualified or
component) become concepts; artwork for anything else is ignored.

Idempotent: images that already exist are kept (use --force to redo them).
"""
import argparse
import concurrent.futures
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from PIL import Image

STYLES = ("noto", "fluent3d", "twemoji", "openmoji")
SIZES = (128, 64)
SVG_RENDER = 256  # rsvg-convert output size before the Lanczos downscale

NOTO_TTF = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
CLDR_EN = "/usr/share/unicode/cldr/common/annotations/en.xml"
CLDR_EN_DERIVED = "/usr/share/unicode/cldr/common/annotationsDerived/en.xml"

NPM_PACKAGES = {
    "fluent3d": ("@lobehub/fluent-emoji-3d", "1.1.0"),
    "twemoji": ("@twemoji/svg", "15.0.0"),
    "openmoji": ("openmoji", "17.0.0"),
}
DEBIAN_PACKAGES = ("fonts-noto-color-emoji", "unicode-data", "unicode-cldr-core",
                   "librsvg2-bin", "python3-fonttools", "python3-pil")

LICENCES = {
    "noto": {
        "source": "Noto Color Emoji (Debian fonts-noto-color-emoji, NotoColorEmoji.ttf CBDT bitmaps)",
        "licence": "Apache-2.0 (images); font under SIL OFL 1.1",
        "attribution": "Noto Color Emoji, Copyright 2013-2023 Google LLC, licensed under the Apache License 2.0.",
        "url": "https://github.com/googlefonts/noto-emoji",
    },
    "fluent3d": {
        "source": "Fluent Emoji 3D (npm @lobehub/fluent-emoji-3d 1.1.0, WebP renders of Microsoft Fluent Emoji)",
        "licence": "MIT",
        "attribution": "Fluent Emoji, Copyright (c) Microsoft Corporation, MIT License; packaged by LobeHub.",
        "url": "https://github.com/microsoft/fluentui-emoji",
    },
    "twemoji": {
        "source": "Twemoji (npm @twemoji/svg 15.0.0, SVG rendered with rsvg-convert)",
        "licence": "CC-BY-4.0 (artwork); code MIT",
        "attribution": "Twemoji graphics, Copyright 2020 Twitter, Inc and other contributors; "
                       "maintained by the jdecked/twemoji project. Licensed under CC-BY 4.0 "
                       "(https://creativecommons.org/licenses/by/4.0/). Images were rendered, "
                       "composited on white and resized.",
        "url": "https://github.com/jdecked/twemoji",
    },
    "openmoji": {
        "source": "OpenMoji (npm openmoji 17.0.0, color SVG rendered with rsvg-convert)",
        "licence": "CC-BY-SA-4.0",
        "attribution": "All emojis designed by OpenMoji - the open-source emoji and icon project. "
                       "License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). "
                       "Images were rendered, composited on white and resized; the derived images "
                       "are shared under CC BY-SA 4.0.",
        "url": "https://openmoji.org",
    },
    "metadata": {
        "source": "Unicode emoji-test.txt (Debian unicode-data) and CLDR English annotations (Debian unicode-cldr-core)",
        "licence": "Unicode-DFS-2016 (Unicode License v3)",
        "attribution": "Copyright (c) 1991-2023 Unicode, Inc. Unicode data files and CLDR.",
        "url": "https://www.unicode.org/license.txt",
    },
}

IGNORED_CPS = {0xFE0F, 0xFE0E}
SKIN_TONES = set(range(0x1F3FB, 0x1F400))


def log(msg):
    print("[emoji] " + msg, flush=True)


def norm_key(cps):
    """Normalized key of a codepoint sequence (list of ints): FE0F/FE0E dropped, lower hex.

    A tag sequence missing its CANCEL TAG (U+E007F; Fluent names its subdivision flags so) gets one.
    """
    cps = [c for c in cps if c not in IGNORED_CPS]
    if cps and any(0xE0020 <= c <= 0xE007E for c in cps) and cps[-1] != 0xE007F:
        cps.append(0xE007F)
    return "-".join("%04x" % c for c in cps)


def parse_hex_name(stem):
    """'1F468-200D-1F373' / '1f468_200d' -> [ints], or None when stem is not a hex sequence."""
    parts = re.split(r"[-_ ]", stem.strip())
    try:
        return [int(p, 16) for p in parts if p]
    except ValueError:
        return None


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root):
    """Checksum of a folder: sha256 over sorted 'relpath\\0sha256\\n' lines of all its files."""
    h = hashlib.sha256()
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            h.update(("%s\0%s\n" % (rel, sha256_file(p))).encode())
            n += 1
    return h.hexdigest(), n


# ---------------------------------------------------------------- metadata

def load_emoji_test(path):
    """Concepts from emoji-test.txt: key -> {codepoints, name, group, subgroup, status, version}."""
    concepts = {}
    group = subgroup = version = None
    line_re = re.compile(r"^([0-9A-Fa-f ]+);\s*([\w-]+)\s*#\s*\S+\s+E([\d.]+)\s+(.*)$")
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# Version:"):
                version = line.split(":", 1)[1].strip()
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
                continue
            if line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
                continue
            m = line_re.match(line)
            if not m:
                continue
            status = m.group(2)
            if status not in ("fully-qualified", "component"):
                continue
            cps = [int(x, 16) for x in m.group(1).split()]
            key = norm_key(cps)
            if key in concepts:
                continue
            concepts[key] = {
                "codepoints": "-".join("%04x" % c for c in cps),
                "name": m.group(4).strip(),
                "group": group,
                "subgroup": subgroup,
                "status": status,
                "emoji_version": m.group(3),
            }
    return concepts, version


def load_cldr(paths):
    """CLDR annotations: key -> (tts name or None, [keywords])."""
    out = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        root = ET.parse(path).getroot()
        for a in root.iter("annotation"):
            cp = a.get("cp")
            if not cp or a.text is None:
                continue
            key = norm_key([ord(ch) for ch in cp])
            name, kws = out.get(key, (None, []))
            if a.get("type") == "tts":
                name = name or a.text.strip()
            else:
                for k in a.text.split("|"):
                    k = k.strip()
                    if k and k not in kws:
                        kws.append(k)
            out[key] = (name, kws)
    return out


def load_heldout(path):
    keys = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            cps = parse_hex_name(line.split()[0])
            if cps is None:
                raise SystemExit("heldout.txt: bad line: " + line)
            keys.append(norm_key(cps))
    return keys


# ---------------------------------------------------------------- image helpers

def on_white(img):
    """RGBA/P/RGB image -> RGB on a white background, padded to a centered square."""
    img = img.convert("RGBA")
    w, h = img.size
    s = max(w, h)
    canvas = Image.new("RGBA", (s, s), (255, 255, 255, 255))
    layer = Image.new("RGBA", (s, s), (255, 255, 255, 0))
    layer.paste(img, ((s - w) // 2, (s - h) // 2))
    return Image.alpha_composite(canvas, layer).convert("RGB")


def write_sizes(img, out_dir, style, key):
    """Composite img on white and write STYLE/128/KEY.png and STYLE/64/KEY.png (Lanczos)."""
    rgb = on_white(img)
    for size in SIZES:
        p = os.path.join(out_dir, style, str(size), key + ".png")
        rgb.resize((size, size), Image.LANCZOS).save(p, optimize=True)


def done(out_dir, style, key):
    return all(os.path.exists(os.path.join(out_dir, style, str(s), key + ".png")) for s in SIZES)


# ---------------------------------------------------------------- per-style sources

def noto_sources(ttf):
    """key -> glyph name for each CBDT bitmap glyph, from cmap and GSUB ligatures.

    A glyph may be reached by several sequences (Noto also carries reversed ligatures for
    right-to-left runs); every sequence is returned and the caller keeps those in emoji-test.txt.
    """
    from fontTools.ttLib import TTFont
    font = TTFont(ttf)
    cmap = font.getBestCmap()
    seqs = {}  # glyph name -> list of codepoint lists
    for cp, g in sorted(cmap.items()):
        seqs.setdefault(g, []).append([cp])
    if "GSUB" in font:
        for lookup in font["GSUB"].table.LookupList.Lookup:
            subtables = lookup.SubTable
            ltype = lookup.LookupType
            if ltype == 7:  # extension
                subtables = [st.ExtSubTable for st in subtables]
                ltype = subtables[0].LookupType if subtables else ltype
            if ltype != 4:
                continue
            for st in subtables:
                for first, ligs in st.ligatures.items():
                    for lig in ligs:
                        comps = [first] + list(lig.Component)
                        if all(c in seqs for c in comps):
                            seq = [cp for c in comps for cp in seqs[c][0]]
                            seqs.setdefault(lig.LigGlyph, []).append(seq)
    strike = max(font["CBDT"].strikeData, key=len)
    out = {}
    unmapped = 0
    for g in strike:
        if g not in seqs:
            unmapped += 1
            continue
        for seq in seqs[g]:
            out.setdefault(norm_key(seq), g)
    return font, strike, out, unmapped


def _noto_one(args):
    data, out_dir, key = args
    write_sizes(Image.open(io.BytesIO(data)), out_dir, "noto", key)
    return key


def file_sources(folder, ext):
    """key -> path for FOLDER/*.EXT whose stem is a hex codepoint sequence."""
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, e = os.path.splitext(name)
        if e.lower() != "." + ext:
            continue
        cps = parse_hex_name(stem)
        if cps is None:
            continue
        out.setdefault(norm_key(cps), os.path.join(folder, name))
    return out


def _raster_one(args):
    path, out_dir, style, key = args
    write_sizes(Image.open(path), out_dir, style, key)
    return key


def _svg_one(args):
    path, out_dir, style, key, tmp_dir = args
    tmp = os.path.join(tmp_dir, style + "-" + key + ".png")
    r = subprocess.run(["rsvg-convert", "-w", str(SVG_RENDER), "-h", str(SVG_RENDER),
                        "-o", tmp, path], capture_output=True)
    if r.returncode != 0:
        return None
    try:
        write_sizes(Image.open(tmp), out_dir, style, key)
    finally:
        os.remove(tmp)
    return key


def run_jobs(fn, jobs, workers, label):
    t0 = time.time()
    ok = 0
    failed = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as ex:
        for i, (job, res) in enumerate(zip(jobs, ex.map(fn, jobs, chunksize=16))):
            if res is None:
                failed.append(job[-2] if fn is _svg_one else job[-1])
            else:
                ok += 1
            if (i + 1) % 500 == 0:
                log("%s: %d/%d (%.0fs)" % (label, i + 1, len(jobs), time.time() - t0))
    return ok, failed


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (outside the repo)")
    ap.add_argument("--npm", required=True, help="npm prefix holding node_modules/")
    ap.add_argument("--heldout", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "heldout.txt"))
    ap.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")
    ap.add_argument("--force", action="store_true", help="re-render images that already exist")
    args = ap.parse_args()

    t_start = time.time()
    out = os.path.abspath(args.out)
    nm = os.path.join(os.path.abspath(args.npm), "node_modules")
    for style in STYLES:
        for s in SIZES:
            os.makedirs(os.path.join(out, style, str(s)), exist_ok=True)
    tmp_dir = os.path.join(out, "tmp")
    os.makedirs(tmp_dir, exist_ok=True)

    concepts, emoji_version = load_emoji_test(EMOJI_TEST)
    cldr = load_cldr([CLDR_EN, CLDR_EN_DERIVED])
    log("emoji-test.txt %s: %d concepts (fully-qualified + component)" % (emoji_version, len(concepts)))

    def todo(style, key):
        return args.force or not done(out, style, key)

    stats = {}
    available = {}

    # Noto: CBDT bitmaps.
    font, strike, noto, unmapped = noto_sources(NOTO_TTF)
    noto = {k: g for k, g in noto.items() if k in concepts}
    jobs = []
    for key, g in sorted(noto.items()):
        if todo("noto", key):
            bg = strike[g]
            bg.ensureDecompiled() if hasattr(bg, "ensureDecompiled") else None
            jobs.append((bytes(bg.imageData), out, key))
    ok, failed = run_jobs(_noto_one, jobs, args.jobs, "noto")
    available["noto"] = set(noto) - set(failed)
    stats["noto"] = {"bitmaps_in_font": len(strike), "unmapped_glyphs": unmapped,
                     "concepts": len(available["noto"]), "failed": failed}
    log("noto: %d bitmaps, %d concepts, %d rendered now" % (len(strike), len(available["noto"]), ok))
    del font

    # Fluent 3D: WebP; Twemoji / OpenMoji: SVG via rsvg-convert.
    folders = {
        "fluent3d": (os.path.join(nm, "@lobehub/fluent-emoji-3d/assets"), "webp"),
        "twemoji": (os.path.join(nm, "@twemoji/svg"), "svg"),
        "openmoji": (os.path.join(nm, "openmoji/color/svg"), "svg"),
    }
    for style, (folder, ext) in folders.items():
        if not os.path.isdir(folder):
            raise SystemExit("missing %s (run build.sh to install the npm packages)" % folder)
        src_all = file_sources(folder, ext)
        src = {k: p for k, p in src_all.items() if k in concepts}
        if ext == "svg":
            jobs = [(p, out, style, k, tmp_dir) for k, p in sorted(src.items()) if todo(style, k)]
            ok, failed = run_jobs(_svg_one, jobs, args.jobs, style)
        else:
            jobs = [(p, out, style, k) for k, p in sorted(src.items()) if todo(style, k)]
            ok, failed = run_jobs(_raster_one, jobs, args.jobs, style)
        available[style] = set(src) - set(failed)
        stats[style] = {"files_in_package": len(src_all), "not_in_emoji_test": len(src_all) - len(src),
                        "concepts": len(available[style]), "failed": failed}
        log("%s: %d files, %d concepts, %d rendered now, %d failed"
            % (style, len(src_all), len(available[style]), ok, len(failed)))
    try:
        os.rmdir(tmp_dir)
    except OSError:
        pass

    # Held-out split.
    heldout = load_heldout(args.heldout)
    all4 = set.intersection(*(available[s] for s in STYLES))
    for k in heldout:
        if k not in all4:
            log("WARNING: held-out %s is not in all four styles" % k)

    def base_key(k):
        return "-".join(p for p in k.split("-") if int(p, 16) not in SKIN_TONES)
    held_bases = set(heldout)

    items = {}
    for key in sorted(k for k in concepts if any(k in available[s] for s in STYLES)):
        c = concepts[key]
        name, kws = cldr.get(key, (None, []))
        kw_source = "cldr"
        if not kws:  # CLDR older than emoji-test.txt: derive keywords from the name's words
            kw_source = "name"
            kws = []
            for w in re.split(r"[\s:,]+", (name or c["name"]).lower()):
                if w and w not in kws:
                    kws.append(w)
        items[key] = {
            "key": key,
            "codepoints": c["codepoints"],
            "name": name or c["name"],
            "test_name": c["name"],
            "group": c["group"],
            "subgroup": c["subgroup"],
            "status": c["status"],
            "emoji_version": c["emoji_version"],
            "keywords": kws,
            "keywords_source": kw_source,
            "styles": [s for s in STYLES if key in available[s]],
            "heldout": key in held_bases or base_key(key) in held_bases,
        }

    def deb_version(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    sources = {
        "files": {p: {"sha256": sha256_file(p)} for p in (NOTO_TTF, EMOJI_TEST, CLDR_EN, CLDR_EN_DERIVED)
                  if os.path.exists(p)},
        "debian": {p: deb_version(p) for p in DEBIAN_PACKAGES},
        "npm": {},
    }
    lock = {}
    for lock_path in (os.path.join(nm, ".package-lock.json"),
                      os.path.join(os.path.abspath(args.npm), "package-lock.json")):
        if os.path.exists(lock_path):
            with open(lock_path) as f:
                lock = json.load(f).get("packages", {})
            break
    for style, (pkg, ver) in NPM_PACKAGES.items():
        root = os.path.join(nm, pkg)
        with open(os.path.join(root, "package.json")) as f:
            got = json.load(f).get("version")
        if got != ver:
            raise SystemExit("%s: version %s installed, %s pinned" % (pkg, got, ver))
        tree, nfiles = sha256_tree(root)
        entry = lock.get("node_modules/" + pkg, {})
        sources["npm"][pkg] = {"version": ver, "tree_sha256": tree, "files": nfiles,
                               "integrity": entry.get("integrity"), "resolved": entry.get("resolved")}

    counts = {s: len(available[s]) for s in STYLES}
    manifest = {
        "name": "EmojiBench",
        "format": 1,
        "key_rule": "lower-case hex codepoints joined by '-', U+FE0F and U+FE0E removed; "
                    "images are STYLE/SIZE/KEY.png, RGB on white",
        "sizes": list(SIZES),
        "styles": list(STYLES),
        "generator_training_styles": ["noto", "fluent3d", "twemoji"],
        "emoji_version": emoji_version,
        "licences": LICENCES,
        "sources": sources,
        "counts": {"per_style": counts, "all_four": len(all4), "concepts": len(items),
                   "heldout": sum(1 for v in items.values() if v["heldout"])},
        "stats": stats,
        "heldout": heldout,
        "concepts": items,
    }
    tmp = os.path.join(out, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1, sort_keys=False)
    os.replace(tmp, os.path.join(out, "manifest.json"))
    with open(os.path.join(out, "ATTRIBUTION.txt"), "w", encoding="utf-8") as f:
        f.write("EmojiBench image set, built by likeness scripts/emoji_dataset/build.py.\n"
                "Images were composited on white and resized; per-style sources and licences:\n\n")
        for style, lic in LICENCES.items():
            f.write("%s: %s\n  licence: %s\n  %s\n  %s\n\n"
                    % (style, lic["source"], lic["licence"], lic["attribution"], lic["url"]))
        f.write("OpenMoji images are CC BY-SA 4.0: they are never used to train the generator.\n")
    log("per style: %s" % ", ".join("%s=%d" % kv for kv in counts.items()))
    log("all four styles: %d; concepts in manifest: %d; held-out entries: %d"
        % (len(all4), len(items), manifest["counts"]["heldout"]))
    log("done in %.0fs -> %s" % (time.time() - t_start, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""make_corpus.py: regenerate tests/fuzz/corpus, small valid and malformed safetensors files.

The file name prefix is the status the reader must give: ok__, format__ (LK_ERR_FORMAT) or
unsupported__ (LK_ERR_UNSUPPORTED). tests/test_safetensors.c replays every file and checks it;
the fuzzer uses the folder as its seed corpus. Run: python3 tests/fuzz/make_corpus.py"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def raw(header_bytes, data=b"", pad=True, length=None):
    h = header_bytes
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def st(header, data=b"", **kw):
    """header: dict (serialised compactly) or str/bytes used verbatim."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    return raw(header, data, **kw)


def t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


F32x4 = struct.pack("<4f", 1.0, 2.0, -3.5, 0.25)

CASES = {
    # ---- valid ----
    "ok__empty": st({}),
    "ok__scalar": st({"s": t("F32", [], 0, 4)}, struct.pack("<f", 7.0)),
    "ok__two_with_meta": st({"__metadata__": {"format": "pt", "note": "x"},
                             "a": t("F32", [2, 2], 0, 16), "b": t("U8", [3], 16, 19)},
                            F32x4 + b"\x01\x02\x03"),
    "ok__all_dtypes": st({"f32": t("F32", [1], 0, 4), "f16": t("F16", [2], 4, 8),
                          "bf16": t("BF16", [2], 8, 12), "i64": t("I64", [1], 12, 20),
                          "i32": t("I32", [1], 20, 24), "u8": t("U8", [2], 24, 26)},
                         bytes(range(26))),
    "ok__zero_size": st({"z": t("F32", [0, 3], 0, 0), "a": t("F32", [1], 0, 4)}, F32x4[:4]),
    "ok__unicode_names": st('{"gr\\u00fc\\u00dfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                            '"\u00e9t\u00e9":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"ab"),
    "ok__whitespace": st('  {\n "a" : { "dtype" : "F32" , "shape" : [ 4 ] ,\r\n\t"data_offsets" : [ 0 , 16 ] } }\n'.lstrip(),
                         F32x4),
    "ok__unsorted_offsets": st({"b": t("F32", [2], 8, 16), "a": t("F32", [2], 0, 8)}, F32x4),
    "ok__unpadded": st({"a": t("F32", [4], 0, 16)}, F32x4, pad=False),
    "ok__six_dims": st({"a": t("F32", [1, 1, 1, 1, 2, 2], 0, 16)}, F32x4),
    # ---- framing ----
    "format__empty_file": b"",
    "format__short_file": b"\x08\x00\x00",
    "format__header_len_past_eof": st({"a": t("F32", [4], 0, 16)}, F32x4, length=1000),
    "format__header_len_over_cap": struct.pack("<Q", 100 * 1024 * 1024 + 1) + b"{}      ",
    "format__header_len_huge": struct.pack("<Q", 2**64 - 1) + b"{}      ",
    "format__header_len_zero": struct.pack("<Q", 0) + b"{}",
    "format__leading_space": st(' {"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', F32x4),
    "format__bom": st(b'\xef\xbb\xbf{}'),
    # ---- JSON ----
    "format__not_object": st("[]"),
    "format__truncated_json": st('{"a":{"dtype":"F32"'),
    "format__trailing_garbage": st('{}x'),
    "format__two_objects": st('{}{}'),
    "format__invalid_utf8": st(b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__overlong_utf8": st(b'{"\xc0\xaf":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__surrogate_utf8": st(b'{"\xed\xa0\x80":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__lone_surrogate_escape": st('{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__control_in_string": st(b'{"a\x01":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__nul_escape": st('{"a\\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__bad_escape": st('{"a\\q":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__nul_between_tokens": st(b'{\x00"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a"),
    "format__deep_nesting": st("{\"a\":" + "[" * 3000 + "]" * 3000 + "}"),
    # ---- entries ----
    "format__entry_not_object": st({"a": [1, 2]}),
    "format__entry_extra_key": st({"a": dict(t("F32", [4], 0, 16), extra="1")}, F32x4),
    "format__entry_missing_dtype": st({"a": {"shape": [4], "data_offsets": [0, 16]}}, F32x4),
    "format__entry_missing_offsets": st({"a": {"dtype": "F32", "shape": [4]}}, F32x4),
    "format__entry_duplicate_key": st('{"a":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}}', F32x4),
    "format__dtype_not_string": st({"a": t(5, [4], 0, 16)}, F32x4),
    "format__dtype_unknown": st({"a": t("F99", [4], 0, 16)}, F32x4),
    "format__dtype_lowercase": st({"a": t("f32", [4], 0, 16)}, F32x4),
    "format__shape_float": st('{"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}', F32x4),
    "format__shape_exponent": st('{"a":{"dtype":"F32","shape":[4e0],"data_offsets":[0,16]}}', F32x4),
    "format__shape_leading_zero": st('{"a":{"dtype":"F32","shape":[04],"data_offsets":[0,16]}}', F32x4),
    "format__shape_negative": st('{"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}', F32x4),
    "format__shape_over_2p53": st('{"a":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,16]}}', F32x4),
    "format__shape_string": st({"a": t("F32", ["4"], 0, 16)}, F32x4),
    "format__shape_not_array": st({"a": t("F32", 4, 0, 16)}, F32x4),
    "format__shape_overflow": st({"a": t("F32", [2**50, 2**50, 2**50], 0, 16)}, F32x4),
    "format__shape_overflow_bytes": st({"a": t("F32", [2**31, 2**31], 0, 16)}, F32x4),
    "format__size_mismatch": st({"a": t("F32", [2, 2], 0, 12)}, F32x4[:12]),
    "format__offsets_three": st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, F32x4),
    "format__offsets_float": st('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16.0]}}', F32x4),
    "format__offsets_negative": st('{"a":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}}', F32x4),
    "format__offsets_reversed": st({"a": t("F32", [0], 16, 0)}, F32x4),
    "format__offsets_not_from_zero": st({"a": t("F32", [3], 4, 16)}, F32x4),
    "format__offsets_gap": st({"a": t("F32", [1], 0, 4), "b": t("F32", [2], 8, 16)}, F32x4),
    "format__offsets_overlap": st({"a": t("F32", [3], 0, 12), "b": t("F32", [2], 8, 16)}, F32x4),
    "format__data_trailing_bytes": st({"a": t("F32", [3], 0, 12)}, F32x4),
    "format__data_past_eof": st({"a": t("F32", [8], 0, 32)}, F32x4),
    "format__duplicate_name": st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                 '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', F32x4),
    # ---- metadata ----
    "format__meta_not_object": st({"__metadata__": "x"}),
    "format__meta_number_value": st('{"__metadata__":{"a":1}}'),
    "format__meta_nested": st({"__metadata__": {"a": {"b": "c"}}}),
    "format__meta_null": st({"__metadata__": {"a": None}}),
    "format__meta_duplicate_key": st('{"__metadata__":{"a":"1","a":"2"}}'),
    "format__meta_twice": st('{"__metadata__":{"a":"1"},"__metadata__":{"b":"2"}}'),
    # ---- valid files with what likeness does not read ----
    "unsupported__f64": st({"a": t("F64", [2], 0, 16)}, F32x4),
    "unsupported__i8": st({"a": t("I8", [16], 0, 16)}, F32x4),
    "unsupported__bool": st({"a": t("BOOL", [16], 0, 16)}, F32x4),
    "unsupported__f8_e4m3": st({"a": t("F8_E4M3", [16], 0, 16)}, F32x4),
    "unsupported__seven_dims": st({"a": t("F32", [1, 1, 1, 1, 1, 2, 2], 0, 16)}, F32x4),
}


def main():
    os.makedirs(HERE, exist_ok=True)
    for f in os.listdir(HERE):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(HERE, f))
    for name, blob in CASES.items():
        with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
            f.write(blob)
    print("wrote %d files to %s" % (len(CASES), HERE))


if __name__ == "__main__":
    main()

"""Builds a corpus of crafted tar archives and reads each with Python's tarfile.

Run by the test in tar_corpus.rs: `python3 tar_corpus.py OUT_DIR` writes OUT_DIR/<case>.tar
for every case and prints, as JSON, one object per case: its name, what the Rust reader is
expected to do (`expect`: "agree", "fail", "key" or "rule:<tag>"), and tarfile's reading
with its defaults (`tarfile.open(path)`, no ignore_zeros): its verdict ("ok": it stopped at
a zero block; "stopped": it stopped silently elsewhere, at damage or at the end of the
bytes; "error": it raised), the error, and the regular files (isreg()) it gave before
that, names and data in hex.
"""

import io
import json
import os
import sys
import tarfile

BLOCK = 512
END = b"\0" * 1024


def pad(data):
    return data + b"\0" * (-len(data) % BLOCK)


def header(name, size=0, typeflag=b"0", size_field=None, magic=b"ustar\x0000",
           linkname=b"", prefix=b"", signed=False, extra=None):
    h = bytearray(BLOCK)
    h[0:min(len(name), 100)] = name[:100]
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = typeflag
    h[157:157 + len(linkname)] = linkname
    h[257:265] = magic
    h[345:345 + len(prefix)] = prefix
    if extra:
        extra(h)
    h[148:156] = b" " * 8
    total = sum((b - 256 if b > 127 else b) for b in h) if signed else sum(h)
    h[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(h)


def member(name, data, typeflag=b"0", **kw):
    return header(name, len(data), typeflag, **kw) + pad(data)


def record(key, value):
    n = len(key) + len(value) + 3
    length = n + len(str(n))
    if len(str(length)) != len(str(n)):
        length += 1
    return b"%d %s=%s\n" % (length, key, value)


def pax(records, typeflag=b"x"):
    body = b"".join(record(k, v) for k, v in records)
    return header(b"PaxHeader/x", len(body), typeflag) + pad(body)


def with_tarfile(fmt, build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        def add(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = linkname
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        build(add)
    return buf.getvalue()


CASES = []


def case(name, expect, data):
    CASES.append((name, expect, data))


def plain(add):
    add("000001.jpg", b"jpeg" * 300)
    add("000001.json", b'{"a": 1}')
    add("000002.jpg", b"x" * 512)


case("ustar_plain", "agree", with_tarfile(tarfile.USTAR_FORMAT, plain))
case("ustar_prefix", "agree", with_tarfile(tarfile.USTAR_FORMAT, lambda add: (
    add("p" * 90 + "/" + "q" * 60 + "/000001.txt", b"prefixed"))))
case("pax_long_unicode_names", "agree", with_tarfile(tarfile.PAX_FORMAT, lambda add: (
    add("d" * 120 + "/ünï cødé 猫.jpg", b"cat"), add("é.txt", b"short unicode"))))
case("gnu_long_name", "agree", with_tarfile(tarfile.GNU_FORMAT, lambda add: (
    add("g" * 150 + ".txt", b"long"), add("s.txt", b"short"))))
case("gnu_long_link", "agree", with_tarfile(tarfile.GNU_FORMAT, lambda add: (
    add("l.txt", kind=tarfile.SYMTYPE, linkname="t" * 200), add("f.txt", b"file"))))
case("pax_linkpath", "agree", with_tarfile(tarfile.PAX_FORMAT, lambda add: (
    add("l.txt", kind=tarfile.SYMTYPE, linkname="t" * 200), add("f.txt", b"file"))))
case("links_dirs_fifos_empty_files", "agree", with_tarfile(tarfile.USTAR_FORMAT, lambda add: (
    add("d", kind=tarfile.DIRTYPE), add("d/x.txt", b"x"),
    add("d/y.txt", kind=tarfile.LNKTYPE, linkname="d/x.txt"),
    add("d/z.txt", kind=tarfile.SYMTYPE, linkname="x.txt"),
    add("d/f.pipe", kind=tarfile.FIFOTYPE), add("d/e.cls", b""), add("d/w.txt", b"w"))))
case("odd_names", "agree", with_tarfile(tarfile.USTAR_FORMAT, lambda add: (
    add("noext", b"1"), add("a.b/README", b"2"), add("sp ace.txt", b"3"),
    add(".hidden", b"4"), add("a//b.txt", b"5"), add("./c.txt", b"6"),
    add("tab\t.txt", b"7"), add("x..y.txt", b"8"))))
case("contiguous_type7", "agree", member(b"c.bin", b"contiguous", b"7") + END)
case("v7_format", "agree",
     header(b"dir/", 0, b"\0", magic=b"\0" * 8) +
     member(b"dir/a.txt", b"v7 file", b"\0", magic=b"\0" * 8) + END)
case("signed_checksum", "agree", member("é.txt".encode(), b"signed", signed=True) + END)
case("base256_size", "agree",
     header(b"big.bin", size_field=b"\x80" + (1000).to_bytes(11, "big")) +
     pad(b"b" * 1000) + member(b"after.txt", b"after") + END)
case("global_header_comment", "agree",
     pax([(b"comment", b"hello")], b"g") + member(b"a.txt", b"a") + END)
case("one_end_block", "agree", member(b"a.txt", b"a") + b"\0" * BLOCK)
case("empty_archive", "agree", END)
case("trailing_garbage", "agree", member(b"a.txt", b"a") + END + b"garbage!" * 100)
case("zero_block_mid_archive", "agree",
     member(b"a.txt", b"a") + b"\0" * BLOCK + member(b"hidden.txt", b"h") + END)

# TARmageddon: the pax size says N, the ustar header 0. Read with the ustar size, the file's
# data would be taken for headers, and `smuggled.txt` would appear.
inner = member(b"smuggled.txt", b"evil") + member(b"smuggled.cls", b"1")
case("tarmageddon_pax_size_over_zero", "agree",
     pax([(b"size", b"%d" % len(inner))]) + header(b"outer.tar", 0) + pad(inner) +
     member(b"next.txt", b"n") + END)
# And the other way: the pax size is 0 and the ustar size covers what follows.
visible = member(b"visible.txt", b"v")
case("tarmageddon_pax_size_zero", "agree",
     pax([(b"size", b"0")]) + header(b"empty.bin", len(visible)) + visible + END)
case("pax_size_smaller_than_ustar", "agree",
     pax([(b"size", b"10")]) + header(b"ten.bin", 5000) + pad(b"0123456789") +
     member(b"after.txt", b"after") + END)
case("pax_path", "agree", pax([(b"mtime", b"1350244992.023960108"), (b"path", b"pax/named.txt")]) +
     member(b"ustar-name.txt", b"data") + END)

two = member(b"a.txt", b"a") + member(b"b.txt", b"b" * 1000)
case("truncated_data", "fail", two[:BLOCK * 2 + BLOCK + 300])
case("truncated_header", "fail", two[:BLOCK * 2 + 100])
case("missing_end_blocks", "fail", two)
case("empty_file", "fail", b"")
bad = bytearray(two + END)
bad[BLOCK * 2 + 3] ^= 0x55
case("bad_checksum_mid_archive", "fail", bytes(bad))
bad = bytearray(two + END)
bad[3] ^= 0x55
case("bad_checksum_first_header", "fail", bytes(bad))
case("pax_header_then_end", "fail", member(b"a.txt", b"a") + pax([(b"path", b"x.txt")]) + END)

case("dotdot_name", "key", member(b"../../evil.txt", b"evil") + member(b"ok.txt", b"ok") + END)
case("absolute_name", "key", member(b"/abs/x.txt", b"abs") + END)
case("invalid_utf8_name", "key", member(b"bad\xff.txt", b"bytes") + END)
case("pax_path_with_nul", "key", pax([(b"path", b"a\0b.txt")]) + member(b"x.txt", b"x") + END)
case("backslash_name", "key", member(b"..\\evil.txt", b"w") + END)


def gnu_sparse(h):
    # One sparse chunk: 512 bytes at offset 512 of a 1024-byte file.
    h[386:398] = b"%011o\0" % 512
    h[398:410] = b"%011o\0" % 512
    h[483:495] = b"%011o\0" % 1024


case("gnu_sparse", "rule:sparse",
     member(b"a.txt", b"a") + header(b"s.bin", 512, b"S", magic=b"ustar  \0", extra=gnu_sparse) +
     pad(b"s" * 512) + END)
case("pax_sparse", "rule:sparse",
     pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
          (b"GNU.sparse.name", b"s.bin"), (b"GNU.sparse.realsize", b"1024")]) +
     header(b"GNUSparseFile.0/s.bin", 1024) + pad(b"1\n512\n512\n") + pad(b"s" * 512) + END)
case("unknown_typeflag", "rule:typeflag",
     member(b"a.txt", b"a") + member(b"z.bin", b"z" * 600, b"Z") + member(b"b.txt", b"b") + END)
case("dir_with_data", "rule:data-on-non-file",
     member(b"d/", b"x" * 512, b"5") + member(b"b.txt", b"b") + END)
case("pax_record_bad_length", "rule:pax-record",
     header(b"PaxHeader/x", 14, b"x") + pad(b"20 path=a.txt\n") + member(b"b.txt", b"b") + END)
case("pax_record_trailing_nul", "rule:pax-record",
     header(b"PaxHeader/x", 20, b"x") + pad(b"14 path=a.txt\n\0\0\0\0\0\0") +
     member(b"b.txt", b"b") + END)
case("pax_size_not_decimal", "rule:pax-size",
     pax([(b"size", b"12abc")]) + member(b"a.txt", b"a") + END)
case("pax_size_negative", "rule:pax-size",
     pax([(b"size", b"-1")]) + member(b"a.txt", b"a") + END)
case("pax_size_over_limit", "rule:pax-size",
     pax([(b"size", b"%d" % (1 << 40))]) + header(b"huge.bin", 0) + END)
case("base256_size_over_limit", "rule:member-limit",
     member(b"a.txt", b"a") + header(b"huge.bin", size_field=b"\x80" + (1 << 40).to_bytes(11, "big")) +
     END)
case("base256_size_negative", "rule:negative-size",
     header(b"neg.bin", size_field=b"\xff" * 12) + END)
case("global_header_sets_path", "rule:global-override",
     pax([(b"path", b"everyone.txt")], b"g") + member(b"a.txt", b"a") + END)
case("two_long_names", "rule:duplicate-meta",
     member(b"././@LongLink", b"first.txt\0", b"L", magic=b"ustar  \0") +
     member(b"././@LongLink", b"second.txt\0", b"L", magic=b"ustar  \0") +
     member(b"x.txt", b"x", magic=b"ustar  \0") + END)
case("long_name_and_pax_path", "rule:duplicate-meta",
     member(b"././@LongLink", b"long.txt\0", b"L", magic=b"ustar  \0") +
     pax([(b"path", b"pax.txt")]) + member(b"x.txt", b"x") + END)
case("long_name_over_limit", "rule:meta-limit",
     header(b"././@LongLink", 2 << 20, b"L", magic=b"ustar  \0") + pad(b"n" * 1000) + END)


def read(path):
    members, verdict, error = [], "ok", ""
    try:
        with tarfile.open(path) as t:
            for m in t:
                if m.isreg():
                    data = t.extractfile(m).read()
                    name = m.name.encode("utf-8", "surrogateescape")
                    members.append([name.hex(), data.hex()])
            with open(path, "rb") as f:
                f.seek(t.offset)
                if f.read(BLOCK) != b"\0" * BLOCK:
                    verdict = "stopped"
    except Exception as e:  # noqa: BLE001 - any failure is tarfile's verdict
        verdict, error = "error", f"{type(e).__name__}: {e}"
    return {"verdict": verdict, "error": error, "members": members}


def main():
    out = sys.argv[1]
    results = []
    for name, expect, data in CASES:
        path = os.path.join(out, name + ".tar")
        with open(path, "wb") as f:
            f.write(data)
        result = read(path)
        result.update(case=name, expect=expect, file=path)
        results.append(result)
    json.dump(results, sys.stdout)


main()

#!/usr/bin/env python3
"""Writes the small seed corpus of each fuzz target into fuzz/corpus/<target>/.

The files are committed; run this again after changing it. Inputs the fuzzer found that
crashed a target are added to the same directories by hand (named crash-*), so both the
fuzzer and the crates' unit tests (which run every file of the corpus through the same
checks) keep covering them.
"""

import io
import os
import struct
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
DIGEST = "sha256:" + "ab" * 32


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def image_refs():
    for i, text in enumerate([
        "busybox",
        "library/busybox:1.36",
        "index.docker.io/user/app:v1",
        "localhost:5000/a/b/c:t",
        "127.0.0.1:5000/x:1@" + DIGEST,
        "quay.io/org/img@" + DIGEST,
        "Quay.io/org/img:1",
        "docker.io/a.b/c",
    ]):
        write("image_ref", f"seed-{i}", text)


def crilogs():
    # Lines of a log file.
    write("crilog", "seed-lines",
          "2023-11-14T22:13:20.000000005Z stdout F hello world\n"
          "2023-11-14T22:13:20Z stderr P part\n"
          "2016-12-31T23:59:60.5+01:00 stdout F:x leap second, offset, extra tag\n"
          "0000-01-01T00:00:00+01:00 stdout F before year 0 in UTC\n")
    # Parameters (time seconds, nanos, flags, max line, chunk size), then a payload.
    def params(secs, nanos, flags, max_line, chunk, payload):
        return struct.pack(">QQBBB", secs, nanos, flags, max_line, chunk) + payload
    write("crilog", "seed-split", params(1_700_000_000, 5, 1, 3, 2, b"ab\ncdefghij\n\nk\nlast"))
    write("crilog", "seed-leap", params(62_135_596_800 + 1_483_228_799, 1_500_000_000, 2, 63, 0, b"x" * 100))
    write("crilog", "seed-default", params(0, 0, 4, 0, 255, b"line one\nline two\r\n\x00\xff"))


def layer(entries):
    """A tar from (kind, name, extra) tuples, without the 10 KiB record padding."""
    out = io.BytesIO()
    tar = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
    for kind, name, extra in entries:
        info = tarfile.TarInfo(name)
        info.mtime = 1_700_000_000
        data = None
        if kind == "dir":
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        elif kind == "file":
            info.mode, data = 0o644, extra or b"x"
            info.size = len(data)
        elif kind == "xattr":
            info.mode, data = 0o644, b"x"
            info.size = 1
            info.pax_headers = {"SCHILY.xattr.user.berth": "yes"}
        elif kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, extra
        elif kind == "link":
            info.type, info.linkname = tarfile.LNKTYPE, extra
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        elif kind == "char":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
    end = tar.offset
    tar.close()
    return out.getvalue()[:end] + b"\0" * 1024


def layer_tars():
    write("layer_tar", "seed-plain", layer([
        ("dir", "a/", None), ("file", "a/b", b"hello\n"), ("symlink", "c", "a"), ("link", "d", "a/b"),
        ("file", "c/through-link", b"y"), ("dir", "./", None),
    ]))
    write("layer_tar", "seed-deletions", layer([
        ("file", "etc/.wh.passwd", b""), ("dir", "etc/", None), ("file", "etc/.wh..wh..opq", b""),
        ("file", ".wh.pw", b""), ("file", "new", b"z"),
    ]))
    write("layer_tar", "seed-meta", layer([("xattr", "attr", None), ("fifo", "fifo", None), ("char", "null", None)]))
    # The first refused entry stops a layer: one attempt to get out per seed.
    for name, entries in [
        ("dotdot", [("file", "../escape", b"x")]),
        ("through-parent-links", [("file", "out/pwned", b"x")]),
        ("through-parent-abs-link", [("file", "abs/pwned", b"x")]),
        ("through-parent-up-link", [("file", "up/tmp/pwned", b"x")]),
        ("through-own-link", [("symlink", "evil", "../outside"), ("file", "evil/pwned", b"x")]),
        ("hardlink-out", [("link", "hard", "../outside/sentinel")]),
        ("hardlink-parent", [("link", "pwlink", "pw")]),
        ("loop", [("file", "loop/x", b"x")]),
        ("replace-link", [("dir", "out/", None), ("file", "out/x", b"x")]),
    ]:
        write("layer_tar", "seed-escape-" + name, layer(entries))


if __name__ == "__main__":
    image_refs()
    crilogs()
    layer_tars()

#!/usr/bin/python3
"""png_check.py FILE WIDTH HEIGHT: exit 0 iff FILE is a complete, valid PNG of that size.

Checks the signature, that IHDR comes first and IEND last, every chunk's CRC, and that
the IDAT stream inflates to exactly height * (1 + bytes per row) bytes. Standard library only.
png_problem(data) is the same check on bytes in memory (tests/report/ imports it).
"""
import struct
import sys
import zlib

sys.dont_write_bytecode = True


def png_problem(data):
    """Returns (None, (width, height)) for a complete, valid PNG, else (reason, None)."""
    try:
        return parse(data)
    except Exception as e:  # noqa: BLE001 - any failure to parse is a bad PNG
        return f"cannot parse: {type(e).__name__}: {e}", None


def parse(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return f"expected the PNG signature, found {data[:8]!r}", None
    pos, chunks = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            return f"expected a complete chunk at byte {pos}, found {len(data) - pos} trailing bytes", None
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n or pos + 12 + n > len(data):
            return f"expected {n} bytes of chunk {kind!r}, found the file ends (truncated)", None
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            return f"expected a matching CRC for chunk {kind!r} at byte {pos}, found a mismatch", None
        chunks.append((kind, body))
        pos += 12 + n
    if not chunks or chunks[0][0] != b"IHDR":
        return f"expected IHDR first, found {chunks[0][0] if chunks else None!r}", None
    if chunks[-1][0] != b"IEND":
        return f"expected IEND last, found {chunks[-1][0]!r}", None
    w, h, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if channels is None or interlace != 0:
        return f"expected a non-interlaced grey/RGB(A) PNG, found colour type {ctype}, interlace {interlace}", None
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    row = (w * channels * depth + 7) // 8
    if len(raw) != h * (1 + row):
        return f"expected {h * (1 + row)} bytes of image data, found {len(raw)}", None
    return None, (w, h)


def main(path, want_w, want_h):
    with open(path, "rb") as f:
        err, size = png_problem(f.read())
    if err is None and size != (want_w, want_h):
        err = f"expected {want_w}x{want_h} pixels, found {size[0]}x{size[1]}"
    return err


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: png_check.py FILE WIDTH HEIGHT")
    try:
        err = main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    except Exception as e:  # noqa: BLE001 - any failure to parse is a bad PNG
        err = f"cannot parse: {type(e).__name__}: {e}"
    if err:
        print(err, file=sys.stderr)
        sys.exit(1)

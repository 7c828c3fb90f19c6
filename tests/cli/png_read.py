#!/usr/bin/python3
"""png_read.py: decode a non-interlaced 8-bit PNG (grey, grey+alpha, RGB, RGBA) into numpy,
and cut tiles out of mpivae's image grids. Standard library and numpy only; import it from a
test's Python snippet (sys.path.insert(0, tests/cli)).

  read_png(path)                        -> uint8 array [height, width, channels]
  grid_tile(pix, k, cols, h, w, pad=2)  -> the k-th image of a grid (row-major), [h, w, channels]

The grid layout is vae_image_write_grid's (include/mpivae/image.h): image k at
x0 = pad + (k % cols) * (w + pad), y0 = pad + (k // cols) * (h + pad).
"""
import struct
import sys
import zlib

import numpy as np

sys.dont_write_bytecode = True


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG (signature {data[:8]!r})")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", ihdr)
    ch = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or ch is None or interlace:
        raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB(A) is supported "
                         f"(depth {depth}, colour type {ctype}, interlace {interlace})")
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else:
                raise ValueError(f"{path}: unknown filter {f} on row {y}")
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.astype(np.uint8).reshape(h, w, ch)


def grid_tile(pix, k, cols, h, w, pad=2):
    x0 = pad + (k % cols) * (w + pad)
    y0 = pad + (k // cols) * (h + pad)
    return pix[y0:y0 + h, x0:x0 + w]

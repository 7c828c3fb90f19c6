#!/usr/bin/python3
"""Proves the report page harness (cdp.py, check_page.py) reads pages right
and that each check can fail.

Writes handcrafted pages into a temp dir and renders each in headless
Chromium: a good page (two charts, markers, tables, a data: PNG) must pass,
its DOM facts must be exactly the ones written, and its screenshot must be a
PNG of the whole page, which is taller than the viewport; then pages that
each break one thing must fail with the expected message. Prints one line per case; the exit code is the verdict.

Run: /usr/bin/python3 tests/report/selftest.py (needs chromium).
"""
import base64
import os
import struct
import subprocess
import sys
import tempfile
import zlib

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cdp  # noqa: E402
from check_page import check_page  # noqa: E402


def png_chunk(kind, data):
    return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))


def make_png(w, h):
    """An 8-bit RGB PNG of w x h pixels (a colour ramp)."""
    # Each row: filter type 0, then R, G, B per pixel.
    rows = b"".join(b"\0" + b"".join(bytes((60 * x % 256, 120 * y % 256, 200)) for x in range(w))
                    for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack("!IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def corrupt_header_png(w, h):
    """A PNG whose IHDR fails its CRC (Chromium cannot decode it)."""
    png = bytearray(make_png(w, h))
    png[29] ^= 1  # the last byte of IHDR's CRC
    return bytes(png)


def corrupt_body_png(w, h):
    """A PNG cut in the middle of its pixel data. Chromium's img.decode()
    resolves once the header parses, so only the harness's own PNG check
    (check_page: 'not a valid PNG') sees this."""
    png = make_png(w, h)
    return png[:len(png) - 20]


def data_uri(png):
    return "data:image/png;base64," + base64.b64encode(png).decode()


def png_size(path):
    """(width, height) from a PNG file's IHDR."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack("!II", head[16:24])


# The good page. Its two charts exercise the vertex count: several M subpaths,
# implicit lineto after M, relative commands, exponents, no separators.
GOOD = {
    "title": "selftest report",
    "style": "body { font-family: sans-serif; } svg { border: 1px solid #ccc; }",
    "facts": "<tr><th>model</th><td>mlp</td></tr><tr><th>ranks</th><td>2 on  host-a</td></tr>",
    "checkpoints": "<tr><th>step</th><th>size</th></tr><tr><td>100</td><td>1.2 MB</td></tr>",
    "loss_series": "2",
    "loss_paths": (
        '<path class="series" data-kind="raw" data-run="0" data-points="5" '
        'd="M 10,90 L 60,80 L 110,70 M 160,60 L 210,40" stroke="#888" fill="none"/>'
        '<path class="series" data-kind="smooth" data-run="0" data-points="6" '
        'd="M10 85 60 75 110 65L160,55l5e1-2.5e1 L 290.5,20.25" stroke="#c00" fill="none"/>'),
    "beta_series": "1",
    "beta_paths": ('<path class="series" data-kind="raw" data-run="0" data-points="2" '
                   'd="M0,50 L300,10" stroke="#06c" fill="none"/>'),
    "img": f'<img class="grid" data-kind="prior" data-step="100" src="{data_uri(make_png(3, 2))}" '
           'width="96" height="64" style="image-rendering: pixelated">',
    "script": "document.getElementById('note').textContent = 'script ran';",
}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>
<body>
<h1>Run report: the quick brown fox 0123456789</h1>
<p id="note">script did not run</p>
<table id="facts">{facts}</table>
<figure class="chart" id="chart-loss" data-series="{loss_series}" data-log="1">
<svg width="320" height="100">{loss_paths}
<g class="marker resume" data-step="40" data-run="0"><line x1="60" y1="0" x2="60" y2="100" stroke="green"/></g>
<g class="marker skip" data-step="70" data-run="0" data-why="nonfinite"><circle cx="110" cy="70" r="3"/></g>
<text x="150" y="15">loss (log axis)</text></svg></figure>
<figure class="chart" id="chart-beta" data-series="{beta_series}" data-log="0">
<svg width="320" height="60">{beta_paths}</svg></figure>
{img}
<table id="checkpoints">{checkpoints}</table>
<div style="height: 1000px; background: #eef">taller than the viewport</div>
<script>{script}</script>
</body></html>
"""

GOOD_DOM = {
    "title": "selftest report",
    "charts": [
        {"id": "chart-loss", "series": "2", "log": "1",
         "paths": [{"kind": "raw", "run": "0", "points": "5", "vertices": 5, "error": None},
                   {"kind": "smooth", "run": "0", "points": "6", "vertices": 6, "error": None}],
         "markers": [{"classes": ["marker", "resume"], "step": "40", "run": "0", "why": None},
                     {"classes": ["marker", "skip"], "step": "70", "run": "0", "why": "nonfinite"}]},
        {"id": "chart-beta", "series": "1", "log": "0",
         "paths": [{"kind": "raw", "run": "0", "points": "2", "vertices": 2, "error": None}],
         "markers": []},
    ],
    "tables": {"facts": [["model", "mlp"], ["ranks", "2 on host-a"]], "sessions": None,
               "checkpoints": [["step", "size"], ["100", "1.2 MB"]]},
}
GOOD_IMAGE = {"class": "grid", "kind": "prior", "step": "100", "tool": None, "is_data": True,
              "decodes": True, "error": None, "data_error": None, "width": 3, "height": 2}

# (name, fields of GOOD replaced, substrings the failures must contain)
BAD_CASES = [
    ("console.error", {"script": "console.error('boom', 42);"}, ["console error (console-api): boom 42"]),
    ("console.warn", {"script": "console.warn('careful');"}, ["console warning (console-api): careful"]),
    ("thrown exception", {"script": "throw new Error('thrown on purpose');"},
     ["uncaught exception: Uncaught Error: thrown on purpose"]),
    ("fetch to the network", {"script": "fetch('http://example.invalid/x').catch(() => {});"},
     ["request to 'http://example.invalid/x'"]),
    ("img from the network", {"img": '<img src="http://example.invalid/x.png">'},
     ["request to 'http://example.invalid/x.png'", "src is not a data: URI"]),
    ("img of a missing file", {"img": '<img src="missing.png">'},
     ["missing.png' (only the page itself", "failed load of 'file://", "src is not a data: URI",
      "does not decode", "naturalWidth is 0"]),
    ("corrupt data: PNG header", {"img": f'<img class="grid" src="{data_uri(corrupt_header_png(3, 2))}">'},
     ["does not decode", "not a valid PNG: expected a matching CRC for chunk b'IHDR'", "naturalWidth is 0"]),
    ("truncated data: PNG", {"img": f'<img class="grid" src="{data_uri(corrupt_body_png(3, 2))}">'},
     ["not a valid PNG: expected 27 bytes of chunk b'IDAT', found the file ends (truncated)"]),
    ("data-points != vertices", {"beta_paths": GOOD["beta_paths"].replace('data-points="2"', 'data-points="3"')},
     ["chart chart-beta series 0 (kind=raw, run=0): data-points 3 but d has 2 vertices"]),
    ("data-series != paths", {"loss_series": "3"}, ["chart chart-loss: data-series 3 but 2 path.series"]),
    ("empty series", {"beta_paths": '<path class="series" data-kind="raw" data-run="0" data-points="0" d=""/>'},
     ["chart chart-beta series 0 (kind=raw, run=0): data-points 0, not > 0"]),
    ("unsupported path command", {"beta_paths": GOOD["beta_paths"].replace("L300,10", "C 1,2 3,4 300,10")},
     ["chart chart-beta series 0 (kind=raw, run=0): cannot count the vertices of d: unsupported command 'C'"]),
    ("odd coordinate count", {"beta_paths": GOOD["beta_paths"].replace("L300,10", "L300,10 5")},
     ["cannot count the vertices of d: odd number of coordinates after 'L'"]),
]


def write_page(tmp, name, **changes):
    path = os.path.join(tmp, name + ".html")
    with open(path, "w") as f:
        f.write(PAGE.format(**{**GOOD, **changes}))
    return path


def differences(got, want, where="dom"):
    """Where got differs from want (dicts compared on want's keys only)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k in want for d in differences(got.get(k, "<absent>"), want[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where} is {got!r}, expected {want!r}"]


def good_case(tmp):
    """The good page passes, reads back exactly, and screenshots at its size."""
    shot = os.path.join(tmp, "good.png")
    result = cdp.render(write_page(tmp, "good"), screenshot=shot)
    problems = [f"check_page: {f}" for f in check_page(result)]
    problems += differences(result["dom"], GOOD_DOM)
    problems += differences(result["dom"]["images"], [GOOD_IMAGE], "dom.images")
    if not any(u == result["url"] for u in result["requests"]):
        problems.append(f"the page's own URL {result['url']} is not among the requests {result['requests']}")
    size = png_size(shot) if os.path.exists(shot) else None
    want = (1280, result["dom"]["page_height"])
    if size != want or want[1] <= 900:
        problems.append(f"screenshot size {size}, expected {want}, taller than the 900 px viewport")
    print(f"{'ok' if not problems else 'FAIL'} good page passes and reads back "
          f"(start {result['timing']['start']} s, render {result['timing']['render']} s)")
    for p in problems:
        print(f"    {p}")
    return not problems


def bad_case(tmp, i, name, changes, expected):
    """A page with one thing broken fails with each expected message."""
    failures = check_page(cdp.render(write_page(tmp, f"bad{i}", **changes)))
    missing = [e for e in expected if not any(e in f for f in failures)]
    print(f"{'ok' if not missing else 'FAIL'} {name}: fails ({len(failures)} failures)")
    for m in missing:
        print(f"    expected a failure containing: {m}")
    for f in failures if missing else []:
        print(f"    got: {f}")
    return not missing


def cli_case(tmp):
    """check_page.py's exit code: 0 on the good page, 1 on a bad one."""
    tool = os.path.join(HERE, "check_page.py")
    good = subprocess.run([sys.executable, tool, os.path.join(tmp, "good.html")], capture_output=True, text=True)
    bad = subprocess.run([sys.executable, tool, os.path.join(tmp, "bad0.html")], capture_output=True, text=True)
    ok = good.returncode == 0 and bad.returncode == 1 and "FAIL" in bad.stdout
    print(f"{'ok' if ok else 'FAIL'} check_page.py exits 0 on the good page, 1 on a bad one "
          f"(got {good.returncode}, {bad.returncode})")
    if not ok:
        print(good.stdout + good.stderr + bad.stdout + bad.stderr)
    return ok


def main():
    with tempfile.TemporaryDirectory(prefix="mpivae-report-selftest-") as tmp:
        results = [good_case(tmp)]
        results += [bad_case(tmp, i, *case) for i, case in enumerate(BAD_CASES)]
        results.append(cli_case(tmp))
    failed = results.count(False)
    print(f"{len(results) - failed}/{len(results)} cases ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

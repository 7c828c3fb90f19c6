#!/usr/bin/python3
"""The checks every report page must pass, on the result of cdp.render().

check_page(result) returns one failure string per problem (none: the page
passes):
  - no console message of level error, warning or assert, and no uncaught
    exception;
  - no request but the page's own file:// URL and data: URLs, and no failed
    load;
  - every img has a data: src holding a valid PNG (every chunk's CRC, the
    whole pixel stream), decodes in Chromium, and has naturalWidth > 0;
  - every figure.chart's data-series is its number of path.series, and every
    path.series' data-points is the number of vertices of its d attribute
    (the coordinate pairs of its M and L commands) and is > 0.

Command line: python3 tests/report/check_page.py PAGE.html [--screenshot OUT.png]
prints the failures and exits 1 if there are any, 0 if none (2 if the page
could not be rendered).
"""
import argparse
import os
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402

FAILING_LEVELS = ("error", "warning", "assert")


def check_console(result):
    """Console messages of a failing level, and uncaught exceptions."""
    out = [f"console {m['level']} ({m['source']}): {m['text']}"
           for m in result["console"] if m["level"] in FAILING_LEVELS]
    out += [f"uncaught exception: {e}" for e in result["exceptions"]]
    return out


def without_fragment(url):
    return urllib.parse.urldefrag(url)[0]


def check_requests(result):
    """Requests other than the page itself and data: URLs, and failed loads."""
    page = without_fragment(result["url"])
    out = [f"request to '{u}' (only the page itself and data: URLs are allowed)"
           for u in result["requests"] if without_fragment(u) != page and not u.startswith("data:")]
    out += [f"failed load of '{f['url']}': {f['error']}" for f in result["failed"]]
    return out


def check_images(images):
    """Every img embedded as data:, decoding to a non-empty image."""
    out = []
    for i, img in enumerate(images):
        name = f"img {i} (class={img['class']}, src='{img['src_head']}')"
        if not img["is_data"]:
            out.append(f"{name}: src is not a data: URI")
        elif img["data_error"] is not None:
            out.append(f"{name}: not a valid PNG: {img['data_error']}")
        if not img["decodes"]:
            out.append(f"{name}: does not decode: {img['error']}")
        if not img["width"] > 0:
            out.append(f"{name}: naturalWidth is {img['width']}")
    return out


def check_series(chart_id, j, p):
    """One path.series: parseable, data-points = its vertices, and > 0."""
    name = f"chart {chart_id} series {j} (kind={p['kind']}, run={p['run']})"
    if p["error"] is not None:
        return [f"{name}: cannot count the vertices of d: {p['error']}"]
    if p["points"] != str(p["vertices"]):
        return [f"{name}: data-points {p['points']} but d has {p['vertices']} vertices"]
    if p["vertices"] <= 0:
        return [f"{name}: data-points {p['points']}, not > 0"]
    return []


def check_charts(charts):
    """Every chart's data-series against its paths, then each path."""
    out = []
    for c in charts:
        if c["series"] != str(len(c["paths"])):
            out.append(f"chart {c['id']}: data-series {c['series']} but {len(c['paths'])} path.series")
        for j, p in enumerate(c["paths"]):
            out += check_series(c["id"], j, p)
    return out


def check_page(result):
    """All the generic checks on one render() result: a list of failures."""
    return (check_console(result) + check_requests(result)
            + check_images(result["dom"]["images"]) + check_charts(result["dom"]["charts"]))


def main():
    ap = argparse.ArgumentParser(description="Render PAGE.html and run the generic report page checks.")
    ap.add_argument("page")
    ap.add_argument("--screenshot", metavar="OUT.png")
    args = ap.parse_args()
    try:
        result = cdp.render(args.page, screenshot=args.screenshot)
    except cdp.CdpError as e:
        print(f"error: cannot render '{args.page}': {e}", file=sys.stderr)
        return 2
    failures = check_page(result)
    for f in failures:
        print(f"FAIL {args.page}: {f}")
    if not failures:
        print(f"ok {args.page}: {len(result['dom']['charts'])} charts, {len(result['dom']['images'])} images")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

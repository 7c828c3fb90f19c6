#!/usr/bin/python3
"""check_run.py: renders a run report in headless Chromium and checks it
against the run directories it shows (their metrics.h5, sample PNGs and
checkpoints), on top of the generic checks of check_page.py.

  check_run.py PAGE --run DIR [--run DIR ...] [options]

Checks, each a failure line when it does not hold (exit status 1):
  - check_page.py's: no console error or warning, no exception, no request
    but the page and data: URIs, every image decodes, every chart's
    data-series and data-points match its paths;
  - a chart for every /train column (but step, epoch, skipped, time) of each
    run; one run: a raw and a smoothed train series, and an eval series where
    /eval has the column; several runs: a smoothed series per run (and an
    eval series); each with min(F, 600) points, F the column's finite rows
    (positive ones on a log axis);
  - --live: the run was writing metrics.h5 when the page was written and
    goes on: each series has 1..min(F, 600) points, F read now;
  - --resumed S[:RUN]: every chart has a resume marker at step S (of run RUN,
    default 0); --no-resume: no chart has one;
  - --skipped S:WHY: every chart has a skip marker at step S with data-why WHY;
  - sample grids (one run): per kind, min(files, 16) images of steps among
    the files of DIR/samples, the newest file's step among them;
  - the checkpoints table lists each DIR/checkpoints/step-N.h5, newest first;
  - --sessions N: the sessions table has N rows; --facts TEXT: the facts
    table holds TEXT; --tools T1,T2: an image of each tool; --anomaly: an
    anomaly chart; --max-bytes N: the page is at most N bytes.
"""
import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5py  # noqa: E402
import numpy as np  # noqa: E402

from cdp import render  # noqa: E402
from check_page import check_page  # noqa: E402

MAX_POINTS = 600
MAX_GRIDS = 16
NOT_CHARTED = {"step", "epoch", "skipped", "time"}


def finite_count(values, log):
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if log:
        ok &= v > 0
    return int(ok.sum())


def read_run(d):
    path = os.path.join(d, "metrics.h5")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError:  # a run holds it open for writing: read as an SWMR reader
        f = h5py.File(path, "r", locking=False, swmr=True)
    with f:
        train = {k: f["/train"][k][()] for k in f["/train"]}
        ev = {k: f["/eval"][k][()] for k in f["/eval"]}
    return train, ev


def check_charts(dom, runs, live, fails):
    charts = {c["id"]: c for c in dom["charts"]}
    overlay = len(runs) > 1
    for r, (d, (train, ev)) in enumerate(runs):
        for col in train:
            if col in NOT_CHARTED:
                continue
            cid = "chart-" + re.sub(r"[^A-Za-z0-9_-]", "_", col)  # element ids keep these characters only
            c = charts.get(cid)
            if c is None:
                fails.append(f"expected a chart '{cid}' for {d}, found charts {sorted(charts)}")
                continue
            log = c["log"] == "1"
            want = {"smooth": finite_count(train[col], log)}
            if not overlay:
                want["raw"] = want["smooth"]
            if col in ev and len(ev[col]):
                want["eval"] = finite_count(ev[col], log)
            for kind, f in want.items():
                got = [p for p in c["paths"] if p["kind"] == kind and p["run"] == str(r)]
                exp = min(f, MAX_POINTS)
                if exp == 0:
                    if got:
                        fails.append(f"chart-{col}: expected no {kind} series of run {r} (no finite value), found {len(got)}")
                    continue
                if len(got) != 1:
                    fails.append(f"chart-{col}: expected one {kind} series of run {r}, found {len(got)}")
                elif live and not 0 < int(got[0]["points"]) <= exp:
                    fails.append(f"chart-{col}: expected the {kind} series of run {r} of a running run to have 1..{exp} "
                                 f"points (the rows when read), found {got[0]['points']}")
                elif not live and str(got[0]["points"]) != str(exp):
                    fails.append(f"chart-{col}: expected the {kind} series of run {r} to have min({f}, {MAX_POINTS}) = {exp} "
                                 f"points, found {got[0]['points']}")
            extra = [p for p in c["paths"] if p["run"] == str(r) and p["kind"] not in want]
            if extra:
                fails.append(f"chart-{col}: expected series {sorted(want)} of run {r}, found also {[p['kind'] for p in extra]}")
    return charts


def check_markers(charts, cls, step, run, why, fails):
    for cid, c in charts.items():
        if cid.startswith("chart-anomaly"):
            continue
        hit = [m for m in c["markers"] if cls in m["classes"] and m["step"] == str(step) and m["run"] == str(run)
               and (why is None or m["why"] == why)]
        if not hit:
            fails.append(f"{cid}: expected a {cls} marker at step {step} of run {run}{' (' + why + ')' if why else ''}, "
                         f"found markers {[(m['classes'], m['step'], m['why']) for m in c['markers']][:6]}")


def check_grids(dom, d, fails):
    for kind in ("prior", "recon"):
        files = glob.glob(os.path.join(d, "samples", f"{kind}-step-*.png"))
        steps = sorted(int(re.search(r"-step-(\d+)\.png$", p).group(1)) for p in files)
        imgs = [i for i in dom["images"] if i["class"] == "grid" and i["kind"] == kind]
        got = [int(i["step"]) for i in imgs]
        if len(imgs) != min(len(steps), MAX_GRIDS):
            fails.append(f"{kind} grids: expected min({len(steps)}, {MAX_GRIDS}) images, found {len(imgs)}")
        if steps and steps[-1] not in got:
            fails.append(f"{kind} grids: expected the newest step {steps[-1]} among the images, found {got}")
        if any(s not in steps for s in got):
            fails.append(f"{kind} grids: expected steps of {d}/samples, found {got}")
        if got != sorted(got):
            fails.append(f"{kind} grids: expected steps in order, found {got}")


def check_checkpoints(dom, d, fails):
    files = glob.glob(os.path.join(d, "checkpoints", "step-*.h5"))
    steps = sorted((int(re.search(r"step-(\d+)\.h5$", p).group(1)) for p in files), reverse=True)
    rows = dom["tables"]["checkpoints"]
    if not steps:
        if rows:
            fails.append(f"checkpoints: expected no table ({d} has none), found {rows}")
        return
    if rows is None:
        fails.append("checkpoints: expected a table #checkpoints, found none")
        return
    got = [int(r[0]) for r in rows[1:]]
    if got != steps:
        fails.append(f"checkpoints: expected steps {steps} (newest first), found {got}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page")
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--resumed", action="append", default=[])
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--skipped", action="append", default=[])
    ap.add_argument("--sessions", type=int)
    ap.add_argument("--facts", action="append", default=[])
    ap.add_argument("--tools", default="")
    ap.add_argument("--anomaly", action="store_true")
    ap.add_argument("--max-bytes", type=int)
    ap.add_argument("--screenshot")
    ap.add_argument("--live", action="store_true")
    a = ap.parse_args()

    res = render(a.page, screenshot=a.screenshot)
    fails = list(check_page(res))
    dom = res["dom"]
    runs = [(d, read_run(d)) for d in a.run]
    charts = check_charts(dom, runs, a.live, fails)
    for spec in a.resumed:
        step, _, run = spec.partition(":")
        check_markers(charts, "resume", int(step), int(run or 0), None, fails)
    if a.no_resume:
        for cid, c in charts.items():
            if any("resume" in m["classes"] for m in c["markers"]):
                fails.append(f"{cid}: expected no resume marker, found one")
    for spec in a.skipped:
        step, _, why = spec.partition(":")
        check_markers(charts, "skip", int(step), 0, why or None, fails)
    if len(a.run) == 1 and not a.live:  # a running run writes more grids and checkpoints after the page
        check_grids(dom, a.run[0], fails)
        check_checkpoints(dom, a.run[0], fails)
    if a.sessions is not None:
        rows = dom["tables"]["sessions"]
        n = len(rows) - 1 if rows else 0
        if n != a.sessions:
            fails.append(f"sessions: expected {a.sessions} rows, found {n}: {rows}")
    facts = " | ".join(" ".join(r) for r in (dom["tables"]["facts"] or []))
    for t in a.facts:
        if t not in facts:
            fails.append(f"facts: expected '{t}', found: {facts[:600]}")
    for t in filter(None, a.tools.split(",")):
        if not [i for i in dom["images"] if i["class"] == "tool" and i["tool"] == t]:
            fails.append(f"tools: expected an image of {t}, found {[i['tool'] for i in dom['images'] if i['class'] == 'tool']}")
    if a.anomaly and not [c for c in charts if c.startswith("chart-anomaly")]:
        fails.append(f"tools: expected an anomaly chart, found charts {sorted(charts)}")
    size = os.path.getsize(a.page)
    if a.max_bytes is not None and size > a.max_bytes:
        fails.append(f"page size: expected at most {a.max_bytes} bytes, found {size}")
    npts = sum(int(p["points"]) for c in dom["charts"] for p in c["paths"])
    print(f"{a.page}: {size} bytes, {len(dom['charts'])} charts, {npts} points, "
          f"{len([i for i in dom['images'] if i['class'] == 'grid'])} grids, "
          f"{len([i for i in dom['images'] if i['class'] == 'tool'])} tool images, {len(res['requests'])} requests")
    for f in fails:
        print("FAIL:", f)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())

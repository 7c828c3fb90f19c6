#!/usr/bin/python3
"""Renders an HTML page in headless Chromium and reads facts from its DOM.

A minimal Chrome DevTools Protocol (CDP) client on the standard library only:
an RFC 6455 websocket client (HTTP Upgrade handshake, masked client frames,
text and continuation frames, ping and close), the launch of a throwaway
headless Chromium, and render(), which loads one file:// page and returns
what the report tests check:

    console     [{level, text, source}] from Runtime.consoleAPICalled (level
                is the console call: log, info, warning, error, ...) and
                Log.entryAdded (verbose, info, warning, error)
    exceptions  [text] from Runtime.exceptionThrown
    requests    [url] from Network.requestWillBeSent, the page's own included
    failed      [{url, error, canceled, blocked}] from Network.loadingFailed
    dom         charts, images, tables, title and scroll height (DOM_FACTS_JS;
                the contract is the top comment of include/mpivae/report.h);
                each image also has data_error: what is wrong with the PNG
                in its data: URI (tests/cli/png_check.py's check), or None.
                Chromium's img.decode() resolves once a PNG's header parses,
                so a truncated or corrupt body passes it; this catches those
    url         the file:// URL the page was loaded from
    timing      seconds: start (launch to DevTools ready), render (the rest)

Every blocking step has the deadline of the whole call (90 s by default), and
Chromium and its profile directory are always removed. Chromium's host
resolver maps every name to NOTFOUND, so a page's request to the network is
recorded and fails without leaving the machine.

Command line: python3 tests/report/cdp.py PAGE.html [--screenshot OUT.png]
prints the dict as JSON.
"""
import argparse
import base64
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from png_check import png_problem  # noqa: E402

CHROMIUM = os.environ.get("MPIVAE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--hide-scrollbars", "--mute-audio",
    # No request leaves the machine; it still shows in Network events and fails.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
SETTLE_S = 0.3
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class CdpError(Exception):
    """A failure of the browser, the protocol or the page load."""


class CdpTimeout(CdpError):
    """A deadline passed."""


def remaining(deadline):
    """Seconds left until deadline (monotonic); raises CdpTimeout when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise CdpTimeout("timed out")
    return left


class WebSocket:
    """A client websocket (RFC 6455) with text messages, enough for CDP."""

    def __init__(self, url, deadline):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws":
            raise CdpError(f"unsupported websocket url '{url}'")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80),
                                             timeout=remaining(deadline))
        self.buf = bytearray()
        self.parts = []  # the frames of a fragmented message so far
        self.closed = False
        self._handshake(parts, deadline)

    def _handshake(self, parts, deadline):
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (("?" + parts.query) if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill(len(self.buf) + 1, deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise CdpError(f"websocket handshake refused: '{lines[0]}'")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise CdpError("websocket handshake: wrong Sec-WebSocket-Accept")

    def _fill(self, n, deadline):
        """Reads from the socket until the buffer holds at least n bytes."""
        while len(self.buf) < n:
            self.sock.settimeout(remaining(deadline))
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise CdpTimeout("timed out reading from the websocket") from None
            if not chunk:
                raise CdpError("websocket closed by the browser")
            self.buf += chunk

    def send_frame(self, opcode, payload):
        """Sends one final, masked frame (clients must mask, RFC 6455 5.3)."""
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
        self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def _recv_frame(self, deadline):
        """Returns (fin, opcode, payload) of the next frame.

        The frame leaves the buffer only once whole, so a timeout midway
        loses nothing."""
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, at = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, at = struct.unpack_from("!Q", self.buf, 2)[0], 10
        mask_at = at
        if b1 & 0x80:
            at += 4
        self._fill(at + n, deadline)
        payload = bytes(self.buf[at:at + n])
        if b1 & 0x80:
            mask = self.buf[mask_at:mask_at + 4]
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        del self.buf[:at + n]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_text(self, deadline):
        """Returns the next whole text message, answering pings on the way."""
        while True:
            fin, opcode, payload = self._recv_frame(deadline)
            if opcode == 0x8:
                self.closed = True
                raise CdpError("websocket closed by the browser")
            if opcode == 0x9:
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x1:
                self.parts = [payload]
            elif opcode == 0x0 and self.parts:
                self.parts.append(payload)
            else:
                raise CdpError(f"unexpected websocket frame opcode {opcode}")
            if fin:
                message, self.parts = b"".join(self.parts), []
                return message.decode()

    def close(self):
        try:
            if not self.closed:
                self.send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


class Cdp:
    """A CDP session on one target's websocket: commands and buffered events."""

    def __init__(self, ws_url, deadline):
        self.ws = WebSocket(ws_url, deadline)
        self.next_id = 0
        self.events = []  # (method, params), in arrival order

    def _recv(self, deadline, awaited):
        """The next message; a timeout names what was awaited."""
        try:
            return self.ws.recv_text(deadline)
        except CdpTimeout:
            raise CdpTimeout(f"timed out waiting for {awaited}") from None

    def _dispatch(self, message):
        """Stores an event; returns (id, message) for a command's answer."""
        msg = json.loads(message)
        if "id" in msg:
            return msg["id"], msg
        self.events.append((msg.get("method"), msg.get("params", {})))
        return None, None

    def call(self, method, deadline, **params):
        """Sends a command and returns its result; events meanwhile are kept."""
        self.next_id += 1
        self.ws.send_text(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            got, msg = self._dispatch(self._recv(deadline, f"the answer to {method}"))
            if got == self.next_id:
                if "error" in msg:
                    raise CdpError(f"{method} failed: {msg['error'].get('message')}")
                return msg.get("result", {})

    def wait_event(self, method, since, deadline):
        """Returns the first event `method` at index >= since, reading as needed."""
        while True:
            for name, params in self.events[since:]:
                if name == method:
                    return params
            since = len(self.events)
            self._dispatch(self._recv(deadline, method))

    def pump(self, seconds, deadline):
        """Reads events for `seconds` (bounded by deadline)."""
        until = min(time.monotonic() + seconds, deadline)
        while time.monotonic() < until:
            try:
                self._dispatch(self.ws.recv_text(until))
            except CdpTimeout:
                return

    def close(self):
        self.ws.close()


class Browser:
    """A headless Chromium with its own profile in a temp dir; a context manager."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.dir = tempfile.mkdtemp(prefix="mpivae-cdp-")
        self.profile = os.path.join(self.dir, "profile")
        self.log_path = os.path.join(self.dir, "chromium.log")
        self.proc = None

    def __enter__(self):
        try:
            with open(self.log_path, "wb") as log:
                # Its own session: the whole process group is killed at the end.
                self.proc = subprocess.Popen(
                    [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            self.port = self._wait_port()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def _wait_port(self):
        """Polls DevToolsActivePort (its first line is the port) until written."""
        path = os.path.join(self.profile, "DevToolsActivePort")
        while True:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with status {self.proc.returncode}:\n{self._log_tail()}")
            try:
                with open(path) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit():
                    return int(lines[0])
            except OSError:
                pass
            if time.monotonic() >= self.deadline:
                raise CdpError(f"chromium wrote no {path}:\n{self._log_tail()}")
            time.sleep(0.05)

    def page_ws_url(self):
        """The websocket URL of the page target, from http://127.0.0.1:PORT/json."""
        # No proxy: a CI machine's http_proxy must not catch 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.port}/json"
        with opener.open(url, timeout=remaining(self.deadline)) as r:
            targets = json.load(r)
        for t in targets:
            if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                return t["webSocketDebuggerUrl"]
        raise CdpError(f"no page target in {url}: {targets}")

    def stop(self):
        """Ends Chromium (SIGTERM, then SIGKILL to its group) and removes the temp dir."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()  # lets Chromium end and reap its children
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of the group
            except ProcessLookupError:
                pass
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# Reads the DOM facts of the report contract (include/mpivae/report.h). Runs as
# an async function expression; Runtime.evaluate awaits it.
DOM_FACTS_JS = r"""
(async () => {
  // Vertices of an SVG path: the coordinate pairs of its M and L commands
  // (implicit repeats included). Any other command, or an odd number of
  // coordinates, makes it unparseable: {vertices: null, error}.
  function countVertices(d) {
    const token = /\s*,?\s*(?:([A-Za-z])|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))/y;
    let vertices = 0, numbers = 0, cmd = null, pos = 0;
    const flush = () => {
      if (numbers % 2) throw new Error(`odd number of coordinates after '${cmd}'`);
      vertices += numbers / 2; numbers = 0;
    };
    d = d || "";
    while (pos < d.length) {
      if (/^[\s,]*$/.test(d.slice(pos))) break;
      token.lastIndex = pos;
      const m = token.exec(d);
      if (!m) throw new Error(`cannot parse at offset ${pos}: '${d.slice(pos, pos + 20)}'`);
      pos = token.lastIndex;
      if (m[1]) {
        if (cmd !== null) flush();
        if (!"MmLl".includes(m[1])) throw new Error(`unsupported command '${m[1]}'`);
        cmd = m[1];
      } else {
        if (cmd === null) throw new Error("coordinates before the first command");
        numbers++;
      }
    }
    if (cmd !== null) flush();
    return vertices;
  }
  function pathFacts(p) {
    const f = {kind: p.getAttribute("data-kind"), run: p.getAttribute("data-run"),
               points: p.getAttribute("data-points"), vertices: null, error: null};
    try { f.vertices = countVertices(p.getAttribute("d")); }
    catch (e) { f.error = String(e.message); }
    return f;
  }
  function chartFacts(fig) {
    return {
      id: fig.id, series: fig.getAttribute("data-series"), log: fig.getAttribute("data-log"),
      paths: Array.from(fig.querySelectorAll("path.series"), pathFacts),
      markers: Array.from(fig.querySelectorAll("g.marker"), g => ({
        classes: Array.from(g.classList), step: g.getAttribute("data-step"),
        run: g.getAttribute("data-run"), why: g.getAttribute("data-why")})),
    };
  }
  async function imageFacts(img) {
    const src = img.getAttribute("src") || "";
    const f = {class: img.getAttribute("class"), kind: img.getAttribute("data-kind"),
               step: img.getAttribute("data-step"), tool: img.getAttribute("data-tool"),
               src_head: src.slice(0, 60), is_data: src.startsWith("data:"),
               decodes: false, error: null, width: 0, height: 0};
    try {
      // A lazy image out of view may never load: decode() gets 10 s.
      await Promise.race([img.decode(), new Promise((_, no) =>
        setTimeout(() => no(new Error("decode() timed out")), 10000))]);
      f.decodes = true;
    } catch (e) { f.error = String(e.message || e); }
    f.width = img.naturalWidth; f.height = img.naturalHeight;
    return f;
  }
  function tableRows(id) {
    const t = document.getElementById(id);
    if (!t || !t.rows) return null;
    return Array.from(t.rows, r => Array.from(r.cells, c => c.textContent.replace(/\s+/g, " ").trim()));
  }
  return {
    title: document.title,
    scroll_height: document.body ? document.body.scrollHeight : 0,
    page_height: document.documentElement.scrollHeight,
    page_width: document.documentElement.scrollWidth,
    charts: Array.from(document.querySelectorAll("figure.chart"), chartFacts),
    images: await Promise.all(Array.from(document.querySelectorAll("img"), imageFacts)),
    tables: {facts: tableRows("facts"), sessions: tableRows("sessions"),
             checkpoints: tableRows("checkpoints")},
  };
})()
"""


def remote_object_text(obj):
    """The text of a console argument (a Runtime.RemoteObject)."""
    if "value" in obj:
        v = obj["value"]
        return v if isinstance(v, str) else json.dumps(v)
    return obj.get("unserializableValue") or obj.get("description") or obj.get("type", "")


def collect_events(events):
    """Sorts a session's events into console, exceptions, requests and failed."""
    out = {"console": [], "exceptions": [], "requests": [], "failed": []}
    url_of = {}
    for method, p in events:
        if method == "Runtime.consoleAPICalled":
            out["console"].append({"level": p.get("type"), "source": "console-api",
                                   "text": " ".join(remote_object_text(a) for a in p.get("args", []))})
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            text = e.get("text", "") + (f" ({e['url']})" if e.get("url") else "")
            out["console"].append({"level": e.get("level"), "source": e.get("source"), "text": text})
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            desc = d.get("exception", {}).get("description")
            out["exceptions"].append(d.get("text", "") + (f" {desc}" if desc else ""))
        elif method == "Network.requestWillBeSent":
            url_of[p.get("requestId")] = p["request"]["url"]
            out["requests"].append(p["request"]["url"])
        elif method == "Network.loadingFailed":
            out["failed"].append({"url": url_of.get(p.get("requestId")), "error": p.get("errorText"),
                                  "canceled": p.get("canceled", False), "blocked": p.get("blockedReason")})
    return out


def load_page(cdp, url, width, height, deadline):
    """Enables the domains, navigates to url and waits for load plus settle time."""
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.call(f"{domain}.enable", deadline)
    cdp.call("Emulation.setDeviceMetricsOverride", deadline,
             width=width, height=height, deviceScaleFactor=1, mobile=False)
    since = len(cdp.events)
    nav = cdp.call("Page.navigate", deadline, url=url)
    if nav.get("errorText"):
        raise CdpError(f"cannot load '{url}': {nav['errorText']}")
    cdp.wait_event("Page.loadEventFired", since, deadline)
    cdp.pump(SETTLE_S, deadline)


def read_dom(cdp, deadline):
    """Runs DOM_FACTS_JS in the page and returns its value."""
    r = cdp.call("Runtime.evaluate", deadline, expression=DOM_FACTS_JS,
                 returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in r:
        raise CdpError(f"reading the DOM failed: {r['exceptionDetails']}")
    return r["result"]["value"]


def data_uri_problem(src):
    """What is wrong with a data: URI as an embedded PNG, or None."""
    header, comma, payload = src.partition(",")
    if not comma:
        return "data: URI without a comma"
    params = header[len("data:"):].split(";")
    if params[0] != "image/png" or params[-1] != "base64":
        return f"data: URI of '{header}', expected 'data:image/png;base64'"
    try:
        png = base64.b64decode(payload, validate=True)
    except ValueError as e:
        return f"bad base64: {e}"
    return png_problem(png)[0]


def add_data_errors(cdp, dom, deadline):
    """Sets each image's data_error from its data: URI's bytes."""
    r = cdp.call("Runtime.evaluate", deadline, returnByValue=True,
                 expression='Array.from(document.querySelectorAll("img"), i => i.getAttribute("src") || "")')
    srcs = r["result"]["value"]
    if len(srcs) != len(dom["images"]):
        raise CdpError(f"the page has {len(srcs)} images now, {len(dom['images'])} before")
    for img, src in zip(dom["images"], srcs):
        img["data_error"] = data_uri_problem(src) if src.startswith("data:") else None


def capture_screenshot(cdp, path, width, dom, deadline):
    """Writes a full-page PNG: the document's scroll size, beyond the viewport."""
    h = max(1, dom["page_height"])
    w = max(width, dom["page_width"])
    shot = cdp.call("Page.captureScreenshot", deadline, format="png", captureBeyondViewport=True,
                    clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))


def render(html_path, screenshot=None, width=1280, height=900, timeout=90):
    """Loads html_path in a fresh headless Chromium; returns the dict above."""
    deadline = time.monotonic() + timeout
    path = pathlib.Path(html_path).resolve()
    if not path.is_file():
        raise CdpError(f"cannot open '{html_path}': no such file")
    url = path.as_uri()
    t0 = time.monotonic()
    with Browser(deadline) as browser:
        cdp = Cdp(browser.page_ws_url(), deadline)
        try:
            t1 = time.monotonic()
            load_page(cdp, url, width, height, deadline)
            dom = read_dom(cdp, deadline)
            add_data_errors(cdp, dom, deadline)
            if screenshot:
                capture_screenshot(cdp, screenshot, width, dom, deadline)
            cdp.pump(0.05, deadline)
        finally:
            cdp.close()
        t2 = time.monotonic()
    result = collect_events(cdp.events)
    result.update(url=url, dom=dom, timing={"start": round(t1 - t0, 3), "render": round(t2 - t1, 3)})
    return result


def main():
    ap = argparse.ArgumentParser(description="Render PAGE.html in headless Chromium; print DOM facts as JSON.")
    ap.add_argument("page")
    ap.add_argument("--screenshot", metavar="OUT.png")
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()
    try:
        result = render(args.page, screenshot=args.screenshot, timeout=args.timeout)
    except CdpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The console's chart library in a real browser: uPlot, as the console serves it, against plotly.

    python benchmarks/console_charts.py                       # about 2-3 minutes on 2 cores
    python benchmarks/console_charts.py --runs 3 --million-runs 0     # quick look
    python benchmarks/console_charts.py --uplot-js DIR/uPlot.iife.min.js  # another uPlot build too

Issue 11 asks for the console's chart library to be chosen "by measured page weight and chart
speed" (docs/decisions/0013-console-charts.md). For each library:

1. Weight: bytes of its browser code, raw (the console serves files uncompressed) and gzip -9
   (what Starlette's GZipMiddleware or a compressing proxy would send).
2. Load: a blank page adds a <script> for the library; milliseconds until its load event (fetch
   over loopback, parse, compile, run). "cold": each run in a fresh browser context (empty HTTP and
   code caches, a first visit); "warm": the third load in one context (HTTP cache and V8's code
   cache, a later visit). Median of --runs.
3. Draw: a line chart of 1,000 / 100,000 / 1,000,000 points (a random walk on a time axis), a bar
   chart of 100 bars and a pie of 10 slices, 1200x300 px. uPlot is driven through the console's
   own chart.js (drawChart; its pie is SVG that chart.js draws, uPlot has none), plotly through
   Plotly.newPlot (scatter with lines, bar and pie traces, default config). "call": until the draw
   call is done (plotly: its promise resolved; uPlot: the constructor and the microtask it paints
   in). "frame": until the browser has rendered the next frame (requestAnimationFrame, then a task
   after it: style, layout and paint recorded; rasterisation runs on other threads and is not
   counted). Frames come at 60 Hz: "frame" includes the wait for the next one (up to ~17 ms).
   Each run in a fresh page, garbage collected just before the call; median of --runs
   (--million-runs for 1,000,000 points); the libraries alternate, swapping who goes first.
   "again": the same chart drawn a second time beside the first in the same page (code compiled
   and warm, as for the second panel of a dashboard), "frame" as above.
4. Memory: JS heap in use (CDP Runtime.getHeapUsage after a forced GC) with the data built and
   after drawing it, and the page's DOM nodes, per case; the table shows 1,000,000 points.

Needs Playwright for Python (the test extra) and Debian's chromium (apt-get install chromium;
--chromium PATH for another build); no browser is downloaded. plotly is measured only when it is
installed: pip install plotly==7.1.0 (for this benchmark only, it is not a loglake dependency).
Every file comes from a local HTTP server on 127.0.0.1; requests to any other host are counted
(foreign_requests) and printed.

Prints tables, then one JSON line. Never asserts.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import importlib.metadata
import importlib.util
import os
import platform
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from common import emit_json, median, note, print_table
from loglake.server.console.web import STATIC, vendor_dir

CHROMIUM = "/usr/bin/chromium"
PLOTLY_INSTALL = "pip install plotly==7.1.0"
LINE_SIZES = (1_000, 100_000, 1_000_000)
BARS = 100
SLICES = 10
MILLION = 1_000_000


@dataclass(frozen=True)
class Library:
    """One chart library's browser code: ``flavour`` says how the bench page drives it."""

    key: str  # URL-safe name: the files are served under /lib/<key>/
    label: str
    flavour: str  # "uplot" (through the console's chart.js) or "plotly"
    js: Path
    css: Path | None = None

    def files(self) -> list[Path]:
        return [self.js] if self.css is None else [self.js, self.css]


@dataclass
class Case:
    """One chart to draw: ``kind`` line / bar / pie with ``n`` points, bars or slices."""

    kind: str
    n: int
    runs: int
    name: str = field(init=False)

    def __post_init__(self) -> None:
        unit = {"line": "points", "bar": "bars", "pie": "slices"}[self.kind]
        self.name = f"{self.kind} {self.n:,} {unit}"


# --- the libraries -----------------------------------------------------------------------------


def console_uplot() -> Library:
    """uPlot exactly as the console serves it: /console/vendor/ is this folder of uplot-python."""
    folder = vendor_dir()
    js = folder / "uPlot.iife.js"
    version = _version(js, r"\(v(\d+\.\d+\.\d+)\)")
    package = importlib.metadata.version("uplot-python")
    return Library(
        "uplot", f"uPlot {version} (uplot-python {package})", "uplot", js, folder / "uPlot.min.css"
    )


def other_uplot(path: Path) -> Library:
    """Another build of uPlot (same API), e.g. a minified release shipped by another wheel."""
    version = _version(path, r"\(v(\d+\.\d+\.\d+)\)")
    css = next(iter(sorted(path.parent.glob("*.css"))), None)
    return Library(f"uplot-{version}", f"uPlot {version} ({path.name})", "uplot", path, css)


def installed_plotly() -> Library | None:
    """plotly.js from the plotly package, or None (with a note saying how to install it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        note(f"plotly is not installed; skipping it ({PLOTLY_INSTALL}, for this benchmark only)")
        return None
    js = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not js.exists():
        note(f"{js} is missing; skipping plotly ({PLOTLY_INSTALL})")
        return None
    version = _version(js, r"plotly\.js v(\S+)")
    package = importlib.metadata.version("plotly")
    return Library("plotly", f"plotly.js {version} (plotly {package})", "plotly", js)


def _version(path: Path, pattern: str) -> str:
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(2000)
    found = re.search(pattern, head)
    return found.group(1) if found else "?"


def weight(lib: Library) -> dict[str, int]:
    js = lib.js.read_bytes()
    css = lib.css.read_bytes() if lib.css else b""
    return {
        "js_bytes": len(js),
        "js_gzip_bytes": len(gzip.compress(js, 9)),
        "css_bytes": len(css),
        "css_gzip_bytes": len(gzip.compress(css, 9)) if css else 0,
    }


# --- the pages and their server ----------------------------------------------------------------

BLANK = """<!doctype html><html><head><meta charset="utf-8"><title>blank</title></head><body>
<script>
window.loadLib = (url) => new Promise((resolve, reject) => {
  const s = document.createElement("script");
  const t0 = performance.now();
  s.onload = () => {
    const total = performance.now() - t0;
    const entry = performance.getEntriesByName(new URL(url, location.href).href)[0];
    resolve({total, fetch: entry ? entry.responseEnd - entry.startTime : null});
  };
  s.onerror = () => reject(new Error("could not load " + url));
  s.src = url;
  document.head.append(s);
});
</script></body></html>
"""

# Shared by both draw pages: the data (built before the clock starts) and the timed run.
BENCH_JS = """
function makeData(kind, n) {
  let s = 2463534242;  // xorshift32: the same data for every library and run
  const rnd = () => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; };
  if (kind === "line") {
    const x = new Array(n), y = new Array(n);
    let v = 1000;
    for (let i = 0; i < n; i++) { x[i] = 1767225600 + i; v += rnd() - 0.5; y[i] = v; }
    return {x, y};  // x: epoch seconds, one point a second
  }
  const x = Array.from({length: n}, (_, i) => (kind === "bar" ? "host-" : "status ") + i);
  const y = Array.from({length: n}, () => Math.round(10 + rnd() * 1000));
  return {x, y};
}
function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  }));
}
window.prepare = (kind, n) => {
  window.benchKind = kind;
  window.benchInput = adapt(kind, makeData(kind, n));
  return true;
};
window.run = async (id) => {
  const div = document.getElementById(id);
  await nextFrame();  // start just after a frame, so no earlier work shares the timed one
  const t0 = performance.now();
  await draw(div, window.benchKind, window.benchInput);
  const t1 = performance.now();
  await nextFrame();
  const t2 = performance.now();
  return {call: t1 - t0, frame: t2 - t0, drawn: drawn(div, window.benchKind, window.benchInput)};
};
"""

UPLOT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>uPlot</title>
{css}<script src="{js}"></script></head>
<body style="margin:0"><div id="chart" style="width:1200px"></div>
<div id="again" style="width:1200px"></div>
<script type="module">
import {{drawChart}} from "/console/static/chart.js";
{bench}
function adapt(kind, d) {{
  return {{kind, x: {{values: d.x, time: kind === "line"}}, series: [{{name: "y", values: d.y}}],
           height: 300}};
}}
async function draw(div, kind, spec) {{
  window.chart = drawChart(div, spec);
  await null;  // uPlot paints in a microtask queued by its constructor
}}
function drawn(div, kind) {{
  return kind === "pie" ? div.querySelectorAll(".slice").length : Number(div.dataset.points);
}}
window.benchReady = true;
</script></body></html>
"""

PLOTLY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>plotly</title>
<script src="{js}"></script></head>
<body style="margin:0"><div id="chart" style="width:1200px"></div>
<div id="again" style="width:1200px"></div>
<script>
{bench}
function adapt(kind, d) {{
  const layout = {{width: 1200, height: 300, margin: {{t: 10, r: 10, b: 40, l: 60}}}};
  if (kind === "line") {{
    const x = d.x.map((t) => t * 1000);  // a plotly date axis takes epoch milliseconds
    return {{traces: [{{type: "scatter", mode: "lines", x, y: d.y}}],
             layout: {{...layout, xaxis: {{type: "date"}}}}}};
  }}
  if (kind === "bar") return {{traces: [{{type: "bar", x: d.x, y: d.y}}], layout}};
  return {{traces: [{{type: "pie", labels: d.x, values: d.y, sort: false}}], layout}};
}}
async function draw(div, kind, input) {{
  await Plotly.newPlot(div, input.traces, input.layout);
}}
function drawn(div, kind, input) {{
  if (kind === "bar") return div.querySelectorAll(".bars .point").length;
  if (kind === "pie") return div.querySelectorAll(".slice").length;
  const line = div.querySelector(".scatterlayer .js-line");
  return line && line.getAttribute("d") ? input.traces[0].y.length : 0;
}}
window.benchReady = true;
</script></body></html>
"""


def page_html(lib: Library) -> str:
    js = f"/lib/{lib.key}/{lib.js.name}"
    if lib.flavour == "plotly":
        return PLOTLY_PAGE.format(js=js, bench=BENCH_JS)
    css = f'<link rel="stylesheet" href="/lib/{lib.key}/{lib.css.name}">\n' if lib.css else ""
    return UPLOT_PAGE.format(js=js, css=css, bench=BENCH_JS)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, Path]  # URL path -> file


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves exactly the mapped files (Last-Modified and 304s as SimpleHTTPRequestHandler does,
    like Starlette's StaticFiles); anything else is a 404."""

    server: _Server

    def translate_path(self, path: str) -> str:
        found = self.server.files.get(unquote(urlsplit(path).path))
        return str(found) if found else os.path.join(tempfile.gettempdir(), "no-such-file")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextmanager
def serving(libs: list[Library]) -> Iterator[str]:
    """A local HTTP server with the blank page, one draw page per library, the libraries' files
    and the console's static folder (chart.js imports api.js); yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="console-charts-") as tmp:
        pages = Path(tmp)
        files: dict[str, Path] = {}
        (pages / "blank.html").write_text(BLANK)
        files["/blank.html"] = pages / "blank.html"
        for lib in libs:
            page = pages / f"{lib.key}.html"
            page.write_text(page_html(lib))
            files[f"/page/{lib.key}.html"] = page
            for path in lib.files():
                files[f"/lib/{lib.key}/{path.name}"] = path
        for path in STATIC.iterdir():
            if path.is_file():
                files[f"/console/static/{path.name}"] = path
        server = _Server(("127.0.0.1", 0), _Files)
        server.files = files
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


# --- measuring ---------------------------------------------------------------------------------


class Browser:
    """One Chromium for the whole run; every measurement gets its own context (empty caches)."""

    def __init__(self, browser: Any, base: str) -> None:
        self.browser = browser
        self.base = base
        self.own = urlsplit(base).netloc
        self.foreign: list[str] = []

    @contextmanager
    def context(self) -> Iterator[Any]:
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.on("request", self._watch)
        try:
            yield context
        finally:
            context.close()

    def _watch(self, request: Any) -> None:
        url = request.url
        if url.startswith(("http:", "https:", "ws:", "wss:")) and urlsplit(url).netloc != self.own:
            self.foreign.append(url)

    def load(self, lib: Library, warm: bool) -> dict[str, float]:
        """Milliseconds from adding the library's <script> to a blank page to its load event."""
        url = f"/lib/{lib.key}/{lib.js.name}"
        with self.context() as context:
            page = context.new_page()
            for _ in range(3 if warm else 1):  # V8 caches code from the second load on
                page.goto(f"{self.base}/blank.html")
                result: dict[str, float] = page.evaluate("(url) => loadLib(url)", url)
            return result

    def draw(self, lib: Library, case: Case) -> dict[str, float]:
        """One timed draw of ``case`` in a fresh page, with the heap around it."""
        with self.context() as context:
            page = context.new_page()
            page.set_default_timeout(180_000)
            page.goto(f"{self.base}/page/{lib.key}.html")
            page.wait_for_function("window.benchReady === true")
            page.evaluate("([kind, n]) => prepare(kind, n)", [case.kind, case.n])
            cdp = context.new_cdp_session(page)
            cdp.send("HeapProfiler.collectGarbage")
            before = cdp.send("Runtime.getHeapUsage")["usedSize"]
            result: dict[str, float] = page.evaluate("() => run('chart')")
            cdp.send("HeapProfiler.collectGarbage")
            after = cdp.send("Runtime.getHeapUsage")["usedSize"]
            nodes = cdp.send("Memory.getDOMCounters")["nodes"]
            again = page.evaluate("() => run('again')")
            return {
                **result,
                "again": again["frame"],
                "heap_before": before,
                "heap_after": after,
                "dom_nodes": nodes,
            }


def alternating(libs: list[Library], runs: int) -> Iterator[Library]:
    """Each library once per round, the order reversed every other round."""
    for round_ in range(runs):
        yield from (libs if round_ % 2 == 0 else libs[::-1])


def measure(browser: Browser, libs: list[Library], cases: list[Case], runs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {lib.key: {"label": lib.label, **weight(lib)} for lib in libs}
    for warm in (False, True):
        name = "load_warm" if warm else "load_cold"
        samples: dict[str, list[dict[str, float]]] = {lib.key: [] for lib in libs}
        for lib in alternating(libs, runs):
            samples[lib.key].append(browser.load(lib, warm))
        for lib in libs:
            figures[lib.key][f"{name}_ms"] = median([s["total"] for s in samples[lib.key]])
            fetches = [s["fetch"] for s in samples[lib.key] if s["fetch"] is not None]
            figures[lib.key][f"{name}_fetch_ms"] = median(fetches)
        note(f"{name}: done")
    for case in cases:
        draws: dict[str, list[dict[str, float]]] = {lib.key: [] for lib in libs}
        for lib in alternating(libs, case.runs):
            draws[lib.key].append(browser.draw(lib, case))
        for lib in libs:
            done = draws[lib.key]
            figures[lib.key].setdefault("draw", {})[case.name] = {
                "runs": len(done),
                "call_ms": median([d["call"] for d in done]),
                "frame_ms": median([d["frame"] for d in done]),
                "frame_ms_all": [round(d["frame"], 1) for d in done],
                "again_frame_ms": median([d["again"] for d in done]),
                "drawn": done[-1]["drawn"],
                "heap_before_mib": median([d["heap_before"] for d in done]) / 2**20,
                "heap_after_mib": median([d["heap_after"] for d in done]) / 2**20,
                "dom_nodes": done[-1]["dom_nodes"],
            }
        note(f"{case.name}: done")
    return figures


# --- output ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}


def report(figures: dict[str, Any], libs: list[Library], cases: list[Case]) -> None:
    rows = []
    for lib in libs:
        f = figures[lib.key]
        rows.append(
            [
                lib.label,
                f["js_bytes"],
                f["js_gzip_bytes"],
                f["css_bytes"],
                f["load_cold_ms"],
                f["load_cold_fetch_ms"],
                f["load_warm_ms"],
            ]
        )
    headers = ["library", "JS bytes", "gzip -9", "CSS bytes", "load cold ms", "of it fetch"]
    print_table([*headers, "load warm ms"], rows, "weight and load (median)")

    rows = []
    for case in cases:
        row: list[Any] = [case.name]
        for lib in libs:
            d = figures[lib.key]["draw"][case.name]
            row += [d["call_ms"], d["frame_ms"], d["again_frame_ms"], d["drawn"]]
        rows.append(row)
    headers = ["chart"]
    for lib in libs:
        key = lib.key
        headers += [f"{key} call ms", f"{key} frame ms", f"{key} again ms", f"{key} drawn"]
    print_table(headers, rows, "draw (median; frame = until the next frame was rendered)")

    heavy = next((c for c in cases if c.n == MILLION), None)
    if heavy is not None:
        rows = []
        for lib in libs:
            d = figures[lib.key]["draw"][heavy.name]
            rows.append(
                [
                    lib.label,
                    d["heap_before_mib"],
                    d["heap_after_mib"],
                    d["heap_after_mib"] - d["heap_before_mib"],
                    d["dom_nodes"],
                ]
            )
        headers = ["library", "heap with data MiB", "after draw MiB", "chart MiB", "DOM nodes"]
        print_table(headers, rows, f"memory, {heavy.name} (JS heap after GC)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument(
        "--million-runs",
        type=int,
        default=3,
        help="runs of the 1,000,000-point line (default 3; 0 leaves it out)",
    )
    parser.add_argument("--chromium", default=CHROMIUM, help=f"browser binary ({CHROMIUM})")
    parser.add_argument(
        "--uplot-js",
        type=Path,
        action="append",
        default=[],
        help="also measure this build of uPlot (its folder's .css is served with it)",
    )
    parser.add_argument("--no-plotly", action="store_true", help="measure uPlot only")
    args = parser.parse_args()

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("Playwright for Python is missing: pip install -e '.[test]'") from None
    if not os.access(args.chromium, os.X_OK):
        raise SystemExit(f"{args.chromium} not found: apt-get install chromium (or --chromium)")

    libs = [console_uplot(), *(other_uplot(path) for path in args.uplot_js)]
    plotly = None if args.no_plotly else installed_plotly()
    if plotly is not None:
        libs.append(plotly)
    cases = [Case("line", n, args.runs) for n in LINE_SIZES if n != MILLION]
    if args.million_runs > 0:
        cases.append(Case("line", MILLION, args.million_runs))
    cases += [Case("bar", BARS, args.runs), Case("pie", SLICES, args.runs)]

    figures: dict[str, Any] = {"machine": machine()}
    with serving(libs) as base, sync_playwright() as p:
        launched = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            browser = Browser(launched, base)
            figures["chromium"] = launched.version
            note(f"Chromium {launched.version}; {', '.join(lib.label for lib in libs)}")
            figures["libraries"] = measure(browser, libs, cases, args.runs)
        finally:
            launched.close()
    figures["machine"]["loadavg_end"] = os.getloadavg()[0]
    figures["foreign_requests"] = len(browser.foreign)

    report(figures["libraries"], libs, cases)
    m = figures["machine"]
    print(
        f"\n{m['cpu']}, {m['cores']} cores, load average {m['loadavg_start']:.2f} at the start, "
        f"{m['loadavg_end']:.2f} at the end; Chromium {figures['chromium']}"
    )
    if browser.foreign:
        print(f"requests to other hosts: {len(browser.foreign)}, first {browser.foreign[0]}")
    emit_json(figures)


if __name__ == "__main__":
    main()

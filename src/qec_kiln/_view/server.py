"""``qec-kiln watch``: a read-only web server for the live page.

A :class:`Watcher` thread reads the bucket every ``interval`` seconds (after the previous read
ended, so a slow bucket is read back to back, never concurrently), renders each sweep's plot
when its rows change, and keeps the last good data when the bucket cannot be read. The page
(``static/``) polls ``api/state`` every second and swaps the plot and tables in place; it fetches
a part of the task table (``api/tasks``: the finished tasks, or those still sampling) only when
that part's version in the poll changed. ``merged.csv`` is the CSV ``qec-kiln merge`` writes.

Serving is Starlette on uvicorn (no hand-written HTTP): only GET and HEAD are answered (405
for any other method, on every path), websockets are off, the Host header must be the loopback
name it was opened with (no DNS rebinding), and every answer carries a strict
Content-Security-Policy (scripts only from this server, no inline code, nothing from elsewhere).

Example:
    >>> w = Watcher("kiln-results", interval=2.0)  # doctest: +SKIP
    >>> serve(w, host="127.0.0.1", port=8787)  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import hashlib
import importlib.resources
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, MutableMapping
from typing import Any

from qec_kiln._errors import KilnError
from qec_kiln._view.data import BucketUnreachable, Snapshot, merged_csv, merged_rows, read_snapshot
from qec_kiln._view.plot import PlotSpec, highlight_factor, render
from qec_kiln._view.state import (
    Prices,
    Rates,
    TaskPart,
    batches_page,
    page_json,
    sweep_json,
    task_columns,
    task_parts,
)

#: The page's Content-Security-Policy: its own script and style, images from itself (the plot)
#: or data: URIs, fetch only to itself; no inline code, frames, forms, plugins or base changes.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "x-frame-options": "DENY",
}
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "tasks.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def asset(name: str) -> bytes:
    """A file of the page (``_view/static/``)."""
    return importlib.resources.files("qec_kiln._view").joinpath("static").joinpath(name).read_bytes()


class Watcher:
    """The bucket, read again and again; the page's JSON and plots of the last good read."""

    def __init__(self, bucket: str, *, sweep: str | None = None, spec: PlotSpec | None = None,
                 prices: Prices | None = None, interval: float = 2.0,
                 read: Callable[..., Snapshot] = read_snapshot) -> None:
        self.bucket, self.sweep, self.interval = bucket, sweep, interval
        self.spec = spec or PlotSpec()
        self.prices = prices or Prices()
        self._read = read
        self._rates = Rates()
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._plots: dict[str, tuple[str, bytes | None, str | None]] = {}  # digest, svg, problem
        self._parts: dict[str, dict[str, TaskPart]] = {}  # sweep -> "done"/"left" -> rows
        self._factor = highlight_factor(self.spec)
        self._columns = task_columns(self._factor)
        self._sweeps: list[dict] = []
        self._unreachable: str | None = None
        self._shown = ""  # what the page shows, but the clock: a change is a new version
        self._version = 0
        self._checked = 0.0
        self.refreshes = 0

    def refresh(self) -> None:
        """Read the bucket once; keep the last data when it cannot be read."""
        try:
            snap = self._read(self.bucket, sweep=self.sweep)
        except (BucketUnreachable, KilnError) as ex:
            with self._lock:
                since = self._unreachable_since if self._unreachable else time.time()
                self._unreachable, self._unreachable_since = str(ex), since
                self._checked = time.time()
                self._publish()
            return
        plots, sweeps, parts = {}, [], {}
        for view in snap.sweeps:
            self._rates.add(view.name, taken=snap.taken, shots=view.shots,
                            fraction=view.fraction_done)
            plots[view.name] = self._plot(view)
            parts[view.name] = task_parts(view, self._factor)
            digest, svg, problem = plots[view.name]
            quoted = urllib.parse.quote(view.name)
            url = None if svg is None else f"plot.svg?sweep={quoted}&v={digest[:16]}"
            csv_url = f"merged.csv?sweep={quoted}&v={digest[:16]}" if view.stats else None
            sweeps.append(sweep_json(view, rates=self._rates, prices=self.prices, plot_url=url,
                                     plot_problem=problem, parts=parts[view.name],
                                     csv_url=csv_url))
        with self._lock:
            self._snapshot, self._plots, self._sweeps, self._parts = snap, plots, sweeps, parts
            self._unreachable = None
            self._checked = time.time()
            self._publish()
        self.refreshes += 1

    def _plot(self, view: Any) -> tuple[str, bytes | None, str | None]:
        """The sweep's SVG, rendered again only when its rows or finished tasks changed."""
        reached = view.reached
        h = hashlib.sha256(repr(self.spec).encode())
        for st in view.stats:
            h.update(st.to_csv_line().encode())
            h.update(b"+" if st.strong_id in reached else b"-")
        digest = h.hexdigest()
        old = self._plots.get(view.name)
        if old is not None and old[0] == digest:
            return old
        if not view.stats:
            return digest, None, "no rows yet: the plot appears when the first fragment lands"
        spec = self.spec.with_defaults(view.metadata_keys(), [t.decoder for t in view.tasks])
        try:
            return digest, render(view.stats, reached=reached, spec=spec, fmt="svg"), None
        except KilnError as ex:
            return digest, None, str(ex)

    def _publish(self) -> None:
        """A new version when anything the page shows changed (not the clock). Holds _lock."""
        shown = json.dumps([self._sweeps, self._unreachable,
                            self._snapshot.problem if self._snapshot else None], default=str)
        if shown != self._shown:
            self._shown, self._version = shown, self._version + 1

    def state(self) -> dict:
        with self._lock:
            return page_json(self._snapshot, version=self._version, sweeps=self._sweeps,
                             unreachable=self._unreachable, checked=self._checked,
                             columns=self._columns)

    def tasks(self, sweep: str, part: str) -> bytes | None:
        """One part (``done`` or ``left``) of a sweep's task table, as JSON (None: no such)."""
        with self._lock:
            entry = self._parts.get(sweep, {}).get(part)
        return entry.body if entry else None

    def csv(self, sweep: str | None) -> bytes | None:
        """The CSV ``qec-kiln merge --sweep SWEEP`` writes, from the rows the page shows (None:
        no such sweep, or no rows yet). Without ``sweep``: ``qec-kiln merge`` of every sweep
        watched, merged now (several sweeps' rows summed by merge itself)."""
        if sweep is None:
            rows = merged_rows(self.bucket, sweep=self.sweep)
            return merged_csv(rows.stats) if rows.stats else None
        with self._lock:
            view = self._snapshot.sweep(sweep) if self._snapshot else None
        return merged_csv(view.stats) if view is not None and view.stats else None

    def plot(self, sweep: str) -> bytes | None:
        with self._lock:
            entry = self._plots.get(sweep)
        return entry[1] if entry else None

    def batches(self, sweep: str, offset: int) -> dict | None:
        with self._lock:
            view = self._snapshot.sweep(sweep) if self._snapshot else None
        return batches_page(view, offset) if view else None

    def run(self, stop: threading.Event) -> None:
        """Refresh until ``stop`` is set, waiting ``interval`` seconds after each read."""
        while not stop.is_set():
            try:
                self.refresh()
            except Exception as ex:  # never let the thread die: the page says what happened
                with self._lock:
                    self._unreachable = f"reading the bucket failed: {type(ex).__name__}: {ex}"
                    self._unreachable_since = time.time()
                    self._publish()
            stop.wait(self.interval)

    _unreachable_since = 0.0


def make_app(watcher: Watcher, *, allowed_hosts: list[str]) -> Any:
    """The ASGI app: the page, its assets, ``api/state``, ``api/batches`` and ``plot.svg``."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def static(name: str) -> Callable[[Request], Any]:
        body = asset(name)

        async def answer(request: Request) -> Response:
            return Response(body, media_type=ASSETS[name], headers={"cache-control": "no-cache"})
        return answer

    async def state(request: Request) -> Response:
        return JSONResponse(watcher.state(), headers={"cache-control": "no-store"})

    async def batches(request: Request) -> Response:
        try:
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return PlainTextResponse("offset must be a number\n", status_code=400)
        page = watcher.batches(request.query_params.get("sweep", ""), offset)
        if page is None:
            return PlainTextResponse("no such sweep\n", status_code=404)
        return JSONResponse(page, headers={"cache-control": "no-store"})

    async def tasks(request: Request) -> Response:
        body = watcher.tasks(request.query_params.get("sweep", ""),
                             request.query_params.get("part", ""))
        if body is None:
            return PlainTextResponse("no such sweep or part (done, left)\n", status_code=404)
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    def csv(request: Request) -> Response:  # a sync handler: Starlette runs it in a thread
        sweep = request.query_params.get("sweep")
        try:
            body = watcher.csv(sweep)
        except KilnError as ex:
            return PlainTextResponse(f"{ex}\n", status_code=503)
        if body is None:
            return PlainTextResponse("no merged rows yet\n", status_code=404)
        name = csv_name(sweep)
        return Response(body, media_type="text/csv; charset=utf-8", headers={
            "cache-control": "no-store",
            "content-disposition": f'attachment; filename="{name}"'})

    async def plot(request: Request) -> Response:
        svg = watcher.plot(request.query_params.get("sweep", ""))
        if svg is None:
            return PlainTextResponse("no plot yet\n", status_code=404)
        return Response(svg, media_type="image/svg+xml", headers={"cache-control": "no-store"})

    routes = [Route("/", static("index.html")), Route("/app.js", static("app.js")),
              Route("/tasks.js", static("tasks.js")), Route("/style.css", static("style.css")),
              Route("/api/state", state), Route("/api/batches", batches),
              Route("/api/tasks", tasks), Route("/merged.csv", csv), Route("/plot.svg", plot)]
    app = Starlette(routes=routes,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)])
    return ReadOnly(app)


class ReadOnly:
    """ASGI wrapper: 405 for every method but GET and HEAD, and the security headers on every
    answer (405 and 404 included)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in HEADERS.items()]
            await send(message)

        if scope["method"] not in ("GET", "HEAD"):
            from starlette.responses import PlainTextResponse

            answer = PlainTextResponse("405: this server only reads (GET, HEAD)\n",
                                       status_code=405, headers={"allow": "GET, HEAD"})
            await answer(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def csv_name(sweep: str | None) -> str:
    """The file name a downloaded CSV gets (only ``[A-Za-z0-9._-]``, whatever the sweep's name).

    >>> csv_name("surface d<9"), csv_name(None)
    ('merged-surface_d_9.csv', 'merged.csv')
    """
    return "merged.csv" if not sweep else "merged-" + re.sub(r"[^A-Za-z0-9._-]", "_", sweep) + ".csv"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one KilnError line (port in use, address not here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not a port someone listens on
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError as ex:
        sock.close()
        if ex.errno == errno.EADDRINUSE:
            raise KilnError(f"port {port} on {host} is in use (another `qec-kiln watch`?); "
                            "give another with --port N") from None
        raise KilnError(f"cannot listen on {host}:{port}: {ex.strerror or ex}; check --host "
                        "and --port") from None
    sock.set_inheritable(True)
    return sock


def allowed_hosts(host: str) -> list[str]:
    """Host headers accepted: loopback names when serving loopback, else any (``--host``)."""
    if host in LOOPBACK or host.startswith("127."):
        return ["127.0.0.1", "localhost", "[::1]", "::1", host]
    return ["*"]


def serve(watcher: Watcher, *, host: str = "127.0.0.1", port: int = 8787,
          log: Callable[[str], None] = print) -> int:
    """Serve the page until Ctrl-C or SIGTERM; the bucket is read in a thread meanwhile."""
    try:
        import uvicorn
    except ImportError:
        raise KilnError("qec-kiln watch needs starlette and uvicorn: pip install "
                        "'qec-kiln[view]'") from None
    sock = bind(host, port)
    app = make_app(watcher, allowed_hosts=allowed_hosts(host))
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), name="kiln-watch", daemon=True)
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    log(f"watching {watcher.bucket} at http://{shown}:{sock.getsockname()[1]}/ "
        f"(read every {watcher.interval:g} s; Ctrl-C stops)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            ws="none", server_header=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop.set()
        sock.close()
    return 0


__all__ = ["CSP", "Watcher", "allowed_hosts", "asset", "bind", "csv_name", "make_app", "serve"]

"""``qec-kiln watch`` end to end: the real server (a subprocess) and a real headless chromium
(tests/fixtures_browser.py). The page must load with no console error, show the numbers of
``status --json``, swap its plot in place when a fragment lands, show hostile names as text, and
the server must answer nothing but reads."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_kiln
from fixtures_servers import free_port
from test_merge import make_sweep
from test_view import HOSTILE, half, hostile_circuits  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


class Watch:
    """``qec-kiln watch`` as a subprocess on a free port."""

    def __init__(self, bucket, *args: str, env=None):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qec_kiln", "watch", "--bucket", str(bucket), "--port",
             str(self.port), "--interval", "0.3", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        first = self.proc.stdout.readline()
        assert first.startswith("watching "), first + self.proc.stderr.read()
        self.url = f"http://127.0.0.1:{self.port}/"

    def request(self, method: str, path: str = "/", headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=b"x" if method in ("POST", "PUT", "PATCH") else None,
                     headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, dict(r.getheaders()), body

    def state(self) -> dict:
        return json.loads(self.request("GET", "/api/state")[2])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(check, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def open_page(browser, url: str) -> None:
    """Leave the last test's page (it may still poll a stopped server), forget its logs, go."""
    browser.get("about:blank")
    browser.console_errors()
    browser.requests()
    browser.get(url)


def page_rows(browser, sweep: str) -> list[list[str]]:
    return browser.execute_script(
        "return [...document.querySelectorAll(`section[data-sweep='${arguments[0]}'] "
        "table.batches tbody tr`)].map(tr => [...tr.cells].map(td => td.textContent));", sweep)


def test_the_page_of_a_local_sweep_shows_the_numbers_of_status_json(tmp_path, small_circuits,
                                                                   browser):
    bucket = tmp_path / "bucket"
    launch = subprocess.Popen(
        [sys.executable, "-m", "qec_kiln", "launch", str(small_circuits), "--bucket", str(bucket),
         "--name", "live", "--jobs", "2", "--max-shots", "20_000", "--max-errors", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (bucket / "live" / "manifest.json").exists(), 60, "the manifest")
    watch = Watch(bucket)
    try:
        open_page(browser, watch.url)
        wait_for(lambda: browser.execute_script("return document.body.dataset.version"), 20,
                 "the first render")
        launch.communicate(timeout=240)
        assert launch.returncode == 0
        status = json.loads(run_kiln("status", "--bucket", str(bucket), "--json",
                                     check=True).stdout)[0]

        def shown_as_status():
            rows = page_rows(browser, "live")
            want = [[b["id"], b["state"], f"{b['shots']:,}", f"{b['errors']:,}",
                     f"{100 * b['fraction']:.1f}%"] for b in status["batches"]]
            got = [[r[0], r[1], r[3], r[4], r[5]] for r in rows]
            return got == want
        wait_for(shown_as_status, 20, "the batch table to show status --json's numbers")
        done = browser.execute_script(
            "return document.querySelector(\"section[data-sweep='live'] .fleet div b\")"
            ".textContent")
        assert done == f"{100 * status['fraction_done']:.1f}%"
        assert browser.execute_script(
            "return document.querySelector(\"section[data-sweep='live'] .plot img\").naturalWidth") > 0
        assert browser.console_errors() == []
    finally:
        watch.stop()
        launch.kill()


def test_the_plot_changes_in_place_when_a_fragment_lands(tmp_path, small_circuits, browser):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m, 0, frac=0.2)
    watch = Watch(bucket)
    try:
        open_page(browser, watch.url)
        img = "document.querySelector(\"section[data-sweep='s'] .plot img\")"
        first = wait_for(lambda: browser.execute_script(
            f"const i = {img}; return i && i.complete && i.naturalWidth > 0 && i.src"), 20,
            "the first plot")
        browser.execute_script("window.__kilnMarker = 'no reload';")
        half(bucket, m, 1, frac=0.4)  # another fragment lands
        second = wait_for(lambda: browser.execute_script(
            f"const i = {img}; return i.src !== arguments[0] && i.complete && "
            "i.naturalWidth > 0 && i.src", first), 20, "the plot to change")
        assert second != first
        assert browser.execute_script("return window.__kilnMarker") == "no reload"
        assert browser.execute_script(
            "return performance.getEntriesByType('navigation').length") == 1
        rows = page_rows(browser, "s")
        assert [r[1] for r in rows] == ["STARTED", "STARTED"]
        assert browser.console_errors() == []
    finally:
        watch.stop()


def test_hostile_names_show_as_text_and_run_no_script(tmp_path, hostile_circuits, browser):  # noqa: F811
    bucket = tmp_path / "bucket"
    m = make_sweep(hostile_circuits, bucket, "s", jobs=2)
    half(bucket, m, 0, frac=0.3)
    watch = Watch(bucket)
    try:
        open_page(browser, watch.url)
        cells = wait_for(lambda: browser.execute_script(
            "return [...document.querySelectorAll('table.tasks td')].map(td => td.textContent)"),
            20, "the tasks table")
        assert HOSTILE in cells, cells
        time.sleep(1.5)  # a poll or two more
        assert browser.alert_text() is None
        assert browser.execute_script("return document.scripts.length") == 1  # app.js alone
        assert browser.console_errors() == []
    finally:
        watch.stop()
    out = tmp_path / "report.html"
    run_kiln("report", "--bucket", str(bucket), "--out", str(out), check=True)
    open_page(browser, out.as_uri())
    text = browser.execute_script("return document.body.innerText")
    assert HOSTILE in text and browser.alert_text() is None
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.console_errors() == []
    others = [u for u in browser.requests() if u != out.as_uri() and not u.startswith("data:")]
    assert others == [], others  # offline: nothing but the file itself
    assert browser.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)")


def test_the_server_answers_only_reads_and_never_changes_the_bucket(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m, 0)

    def listing():
        return sorted((str(p.relative_to(bucket)), p.stat().st_mtime_ns, p.stat().st_size)
                      for p in bucket.rglob("*"))
    before = listing()
    watch = Watch(bucket)
    try:
        wait_for(lambda: watch.state()["sweeps"], 20, "the first read")
        status, headers, _ = watch.request("GET", "/")
        assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
        assert watch.request("HEAD", "/api/state")[0] == 200
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/", "/api/state", "/plot.svg?sweep=s", "/nowhere"):
                status, headers, _ = watch.request(method, path)
                assert status == 405, (method, path, status)
                assert headers["allow"] == "GET, HEAD"
        # another site's page reaching this server by DNS rebinding sends its own Host name
        assert watch.request("GET", "/api/state", {"Host": "evil.example"})[0] == 400
        for path in ("/api/state", "/app.js", "/plot.svg?sweep=s", "/api/batches?sweep=s"):
            assert watch.request("GET", path)[0] == 200, path
        assert all(k not in watch.request("GET", "/api/state")[2].decode()
                   for k in ("AWS_", "SECRET", "PATH="))
        second = subprocess.run([sys.executable, "-m", "qec_kiln", "watch", "--bucket",
                                 str(bucket), "--port", str(watch.port)], capture_output=True,
                                text=True, timeout=60, cwd=REPO)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: port {watch.port} on 127.0.0.1 is in use (another `qec-kiln watch`?); "
            "give another with --port N"]
    finally:
        watch.stop()
    assert listing() == before

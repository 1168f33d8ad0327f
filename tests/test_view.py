"""``qec-kiln watch``'s data, ``qec-kiln plot`` and ``qec-kiln report``, without a browser: sweeps
planned for real (real strong_ids) with fragments written by sinter's own CSV functions."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import sinter
from kiln_helpers import (
    finish,
    half,
    make_sweep,
    row,
    run_kiln,
    tiny_circuits,
    write_fragment,
)

import qec_kiln
from qec_kiln._view.data import BucketUnreachable, read_snapshot
from qec_kiln._view.plot import PlotSpec, render
from qec_kiln._view.server import Watcher
from qec_kiln._view.state import PAGE_SIZE, Prices

# ------------------------------------------------------------------------------------------------
# The snapshot: the same numbers as `status --json`, failures, damaged fragments, no sweep


def test_snapshot_has_the_numbers_of_status_json(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m)
    snap = read_snapshot(str(bucket))
    (view,) = snap.sweeps
    r = run_kiln("status", "--bucket", str(bucket), "--json", check=True)
    assert view.status == json.loads(r.stdout)[0]  # status --json prints one object per sweep
    assert view.shots == sum(int(s.max_shots * 0.5) for s in m.batches[0].shards)
    assert len(view.stats) == len(m.batches[0].shards) and not view.reached
    assert view.states() == {"NOT STARTED": 1, "STARTED": 1}
    assert view.metadata_keys() == {"b", "d", "p", "type"}


def test_a_damaged_fragment_is_a_failure_with_its_log_line_and_the_rest_is_plotted(
        tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m, 0)
    b1 = m.batches[1].id
    (bucket / "s" / "fragments" / f"{b1}.csv").write_text("this is not a sinter csv\n")
    (bucket / "s" / "logs").mkdir()
    (bucket / "s" / "logs" / f"{b1}.log").write_text("starting\nsinter: killed by signal 9\n\n")
    (view,) = read_snapshot(str(bucket)).sweeps
    (failure,) = view.failures
    assert failure["id"] == b1 and failure["state"] == "BAD FRAGMENT"
    assert failure["last_log_line"] == "sinter: killed by signal 9"
    assert "not a sinter resume CSV" in failure["detail"]
    assert any(f"{b1}.csv" in w for w in view.warnings), view.warnings
    assert len(view.stats) == len(m.batches[0].shards)  # b000's rows are still merged


def test_no_sweep_and_a_sweep_without_fragments_are_said_plainly(tmp_path, small_circuits):
    empty = tmp_path / "empty"
    empty.mkdir()
    snap = read_snapshot(str(empty))
    assert snap.sweeps == [] and "no sweeps in this bucket" in (snap.problem or "")
    assert "no such sweep" in (read_snapshot(str(empty), sweep="nope").problem or "")
    bucket = tmp_path / "bucket"
    make_sweep(small_circuits, bucket, "s", jobs=2)
    w = Watcher(str(bucket))
    w.refresh()
    (sw,) = w.state()["sweeps"]
    assert sw["plot_url"] is None and sw["plot_problem"].startswith("no rows yet")
    assert sw["states"] == {"NOT STARTED": 2} and sw["tasks_left_total"] == 4


def test_an_unreachable_bucket_keeps_the_last_data_and_says_so(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m)
    down = False

    def read(url, sweep=None):
        if down:
            raise BucketUnreachable(f"{url}: connection refused (endpoint down)")
        return read_snapshot(url, sweep=sweep)

    w = Watcher(str(bucket), read=read)
    w.refresh()
    before = w.state()
    down = True
    w.refresh()
    after = w.state()
    assert after["unreachable"].endswith("connection refused (endpoint down)")
    assert after["sweeps"] == before["sweeps"] and after["version"] == before["version"] + 1
    assert w.plot("s") is not None
    down = False
    w.refresh()
    assert w.state()["unreachable"] is None


@pytest.mark.slow  # planning 2,500 circuits takes most of its 10 s; a refresh takes about 1 s
def test_thousands_of_batches_are_paged(tmp_path):
    """A plan of 2,500 batches (tiny circuits): the page's JSON holds one page of rows and the
    counts; a refresh of the whole sweep does not take minutes."""
    folder = tiny_circuits(tmp_path / "c", 2500)
    bucket = tmp_path / "bucket"
    m = make_sweep(folder, bucket, "big", jobs=2500, max_shots=100)
    for b in m.batches[:300]:
        write_fragment(bucket, m, b.id, [row(m, s.strong_id, 100, 1) for s in b.shards])
    w = Watcher(str(bucket))
    t0 = time.monotonic()
    w.refresh()
    took = time.monotonic() - t0
    (sw,) = w.state()["sweeps"]
    assert sw["batch_count"] == 2500 and len(sw["batches"]) == PAGE_SIZE
    assert sw["states"] == {"NOT STARTED": 2200, "DONE": 300}
    assert sw["tasks_left_total"] == 2200
    assert {k: p["count"] for k, p in sw["task_parts"].items()} == {"done": 300, "left": 2200}
    assert len(json.loads(w.tasks("big", "left"))["rows"]) == 2200
    page = w.batches("big", 2400)
    assert [b["id"] for b in page["batches"]] == [b.id for b in m.batches[2400:]]
    assert len(json.dumps(w.state())) < 200_000
    assert took < 60, f"one refresh of 2,500 batches took {took:.1f} s"


def test_cost_needs_a_price_and_counts_cpu_time(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m)
    w = Watcher(str(bucket), prices=Prices(per_cpu_hour=3.6))
    w.refresh()
    (sw,) = w.state()["sweeps"]
    seconds = sum(int(s.max_shots * 0.5) * 1e-6 for s in m.batches[0].shards)  # test_merge.row
    assert sw["cost"]["so_far"] == pytest.approx(seconds / 1000)
    assert sw["cost"]["predicted"] == pytest.approx(m.plan.total_predicted_seconds / 1000)
    w = Watcher(str(bucket))
    w.refresh()
    assert w.state()["sweeps"][0]["cost"] is None


# ------------------------------------------------------------------------------------------------
# qec-kiln plot


def _png_pixels(data: bytes):
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    return img, img.getcolors(maxcolors=1 << 20)


@pytest.mark.slow  # four plot runs, each importing matplotlib: ~5 s
def test_plot_writes_a_png_with_the_curves(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    out = tmp_path / "threshold.png"
    r = run_kiln("plot", "--bucket", str(bucket), "--out", str(out))
    assert r.returncode == 2 and "nothing to plot" in r.stderr and not out.exists()
    half(bucket, m, 0)
    half(bucket, m, 1)
    r = run_kiln("plot", "--bucket", str(bucket), "--out", str(out), "--fig_size", "800", "600",
                 "--title", "the sweep", check=True)
    assert "4 task(s) with rows, 0 of 4 at their targets" in r.stdout
    img, colors = _png_pixels(out.read_bytes())
    assert img.size == (800, 600)
    # sinter's curves: its two colours (blue, orange) and their likelihood bands
    assert len(colors) > 200
    empty = render([], reached=set(), spec=PlotSpec(fig_size=(800, 600)), fmt="png")
    _, empty_colors = _png_pixels(empty)
    assert len(colors) > 2 * len(empty_colors)
    svg = tmp_path / "t.svg"
    run_kiln("plot", "--bucket", str(bucket), "--out", str(svg), check=True)
    text = svg.read_text()
    assert ">d=3<" in text.replace("</text>", "<") or "d=3" in text
    assert "still sampling (4)" in text and text.count("<path") > 20
    pdf = tmp_path / "t.pdf"
    run_kiln("plot", "--bucket", str(bucket), "--out", str(pdf), check=True)
    assert pdf.read_bytes().startswith(b"%PDF")


@pytest.mark.slow  # three plot runs: ~2 s
def test_plot_refuses_bad_flags_in_one_line(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    finish(bucket, make_sweep(small_circuits, bucket, "s", jobs=2))
    for extra, says in ((["--out", str(tmp_path / "t.gif")], "give a .png, .svg or .pdf"),
                        (["--out", str(tmp_path / "t.png"), "--x-func", "m.p +"], "SyntaxError"),
                        (["--out", str(tmp_path / "t.png"), "--x_func", "m.nope * 2"],
                         "TypeError")):
        r = run_kiln("plot", "--bucket", str(bucket), *extra)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr


@pytest.mark.slow  # a plot --watch run: ~2 s
def test_plot_watch_rewrites_the_file_as_rows_land_and_ends_when_done(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    out = tmp_path / "t.svg"
    proc = subprocess.Popen([sys.executable, "-m", "qec_kiln", "plot", "--bucket", str(bucket),
                             "--out", str(out), "--watch", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        half(bucket, m, 0)
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        first = out.read_text()
        assert "still sampling (2)" in first
        finish(bucket, m)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "every task reached its targets; done" in stdout
    assert out.read_text() != first and "still sampling" not in out.read_text()
    assert not list(tmp_path.glob(".kiln-tmp-*"))  # written whole, through atomic_write


# ------------------------------------------------------------------------------------------------
# qec-kiln report


def test_report_is_one_self_contained_file_with_names_as_text(tmp_path, hostile_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(hostile_circuits, bucket, "s", jobs=2)
    half(bucket, m, 0, frac=0.3)
    out = tmp_path / "report.html"
    r = run_kiln("report", "--bucket", str(bucket), "--out", str(out),
                 "--price-per-cpu-hour", "2", check=True)
    assert "sweep s" in r.stdout
    text = out.read_text()
    # one script, tasks.js, allowed by its hash; the hostile name is text
    assert text.count("<script") == 1 and "&lt;script&gt;alert(2)&lt;" in text
    assert "script-src &#x27;sha256-" in text and "unsafe-inline" not in text
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(ref.startswith("data:") for ref in refs), refs
    assert "url(" not in text and "@import" not in text and "http" not in text.replace(
        "http-equiv", "")
    assert "data:image/svg+xml;base64," in text and "cost predicted" in text
    assert text.count('<tr><td>b0') == len(m.batches)
    assert text.count('<tr class="sampling"') == 3 and text.count('<tr class="reached"') == 0
    # every task, with rows or not yet; the merged CSV it carries is `qec-kiln merge`'s, byte for byte
    merged = tmp_path / "merged.csv"
    run_kiln("merge", "--bucket", str(bucket), "--sweep", "s", "--out", str(merged), check=True)
    (csv,) = re.findall(r'href="data:text/csv;base64,([^"]*)"', text)
    assert base64.b64decode(csv) == merged.read_bytes()


def test_the_poll_does_not_grow_with_finished_tasks(tmp_path, small_circuits):
    """api/state carries a version per part of the task table, never its rows."""
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    half(bucket, m, 0)
    w = Watcher(str(bucket))
    w.refresh()
    before = w.state()["sweeps"][0]
    finish(bucket, m)
    w.refresh()
    after = w.state()["sweeps"][0]
    assert {k: p["count"] for k, p in before["task_parts"].items()} == {"done": 0, "left": 4}
    assert {k: p["count"] for k, p in after["task_parts"].items()} == {"done": 4, "left": 0}
    assert "rows" not in json.dumps(after) and abs(len(json.dumps(after)) - len(json.dumps(before))) < 600
    done = json.loads(w.tasks("s", "done") or b"")
    assert done["version"] == after["task_parts"]["done"]["version"] and len(done["rows"]) == 4


@pytest.mark.slow  # a report run: ~1 s (the report test above stays fast)
def test_report_of_an_empty_bucket_says_so(tmp_path):
    (tmp_path / "b").mkdir()
    out = tmp_path / "r.html"
    r = run_kiln("report", "--bucket", str(tmp_path / "b"), "--out", str(out), check=True)
    assert "no sweeps in this bucket" in r.stdout and "no sweeps in this bucket" in out.read_text()


@pytest.mark.slow  # a report run: ~2 s
def test_status_json_of_merge_none_is_unchanged_for_the_cli(tmp_path, small_circuits):
    """plot/report merge in memory: nothing appears in the bucket or the folder they run in."""
    bucket = tmp_path / "bucket"
    finish(bucket, make_sweep(small_circuits, bucket, "s", jobs=2))
    before = sorted((p.relative_to(bucket), p.stat().st_mtime_ns) for p in bucket.rglob("*"))
    run_kiln("report", "--bucket", str(bucket), "--out", str(tmp_path / "r.html"), check=True,
             cwd=tmp_path)
    assert sorted((p.relative_to(bucket), p.stat().st_mtime_ns) for p in bucket.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "circuits", "r.html"]
    assert qec_kiln.merge(bucket, None).rows == 4
    shutil.rmtree(bucket)


def test_sinter_plot_defaults_follow_the_metadata():
    assert PlotSpec().with_defaults({"x"}, ["pymatching"]) == PlotSpec()
    two = PlotSpec().with_defaults({"d", "p"}, ["pymatching", "fusion_blossom"])
    assert "decoder" in (two.group_func or "")
    stats = [sinter.TaskStats(strong_id=str(i), decoder="pymatching", shots=100, errors=5,
                              json_metadata={"p": 0.001 * (i + 1), "d": 3}) for i in range(3)]
    assert b"still sampling" not in render(stats, reached={"0", "1", "2"},
                                           spec=PlotSpec().with_defaults({"d", "p"}, []))

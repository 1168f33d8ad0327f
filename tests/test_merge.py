"""``qec-kiln merge`` and ``status`` on fragments written with sinter's own CSV functions (real
strong_ids from a real plan, rows made with ``sinter.TaskStats``), so each case is exact and fast."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import sinter
from kiln_helpers import (
    REPO,
    finish,
    make_sweep,
    row,
    run_kiln,
    sinter_combine,
    write_surface_circuits,
)

from qec_kiln._backends import JobState
from qec_kiln._report.merge import merge_sweeps
from qec_kiln._report.status import sweep_progress
from qec_kiln._storage import LocalBucket, S3Bucket, open_bucket, parse_url


def shots_by_id(path) -> dict[str, int]:
    return {s.strong_id: s.shots for s in sinter.read_stats_from_csv_files(str(path))}


# ------------------------------------------------------------------------------------------------
# Output: exactly what `sinter combine` prints for the same fragments


def test_merged_bytes_equal_sinter_combine_of_the_fragments(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    finish(bucket, m, shots_of=lambda s: 1000 + 7 * len(s.circuit))
    out = tmp_path / "merged.csv"
    report = merge_sweeps(str(bucket), out)
    frags = [bucket / "s" / "fragments" / f"{b.id}.csv" for b in m.batches]
    assert out.read_bytes() == sinter_combine(*frags)
    assert report.rows == 4 and report.reached == 0 and report.total == 4


def test_merge_to_no_file_keeps_the_merged_rows_in_memory(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    import qec_kiln

    empty = qec_kiln.merge(bucket, None)  # no rows yet: no error without a file to write
    assert (empty.rows, empty.stats, empty.total) == (0, [], 4)
    finish(bucket, m, shots_of=lambda s: 1000 + 7 * len(s.circuit))
    before = sorted(p.name for p in tmp_path.iterdir())
    report = qec_kiln.merge(bucket, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and report.out == ""
    merge_sweeps(str(bucket), tmp_path / "merged.csv")
    expected = (tmp_path / "merged.csv").read_text().splitlines()[1:]
    assert [s.to_csv_line() for s in report.stats] == expected


# ------------------------------------------------------------------------------------------------
# Issue 13.2: rows of tasks a batch did not plan are not counted


def test_merge_keeps_only_the_rows_each_batch_planned(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    finish(bucket, m)
    # b000's fragment also holds rows of a task planned only in b001 (what a manifest deleted and
    # relaunched with another --jobs leaves behind): 3 rows, 1 task, 2,500 shots.
    b0, b1 = m.batches
    foreign = b1.shards[0].strong_id
    assert foreign not in {s.strong_id for s in b0.shards}
    text = (bucket / "s" / "fragments" / "b000.csv").read_text()
    extra = [row(m, foreign, 1000), row(m, foreign, 1000), row(m, foreign, 500)]
    (bucket / "s" / "fragments" / "b000.csv").write_text(text + "".join(x + "\n" for x in extra))

    logged: list[str] = []
    out = tmp_path / "merged.csv"
    report = merge_sweeps(str(bucket), out, log=logged.append)
    assert shots_by_id(out) == {sid: 4000 for sid in m.plan.task_targets()}
    assert report.reached == report.total == 4
    drops = [w for w in logged if "b000.csv" in w and "does not plan" in w]
    assert len(drops) == 1, logged
    assert "2,500 shots of 1 task(s)" in drops[0], drops[0]
    assert not any("b001.csv" in w for w in logged), logged


# ------------------------------------------------------------------------------------------------
# Issue 13.3: several sweeps in one bucket are combined openly, and judged one by one


@pytest.mark.slow
def test_merging_several_sweeps_says_what_it_combines(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    a = make_sweep(small_circuits, bucket, "a4k", max_shots=4000, jobs=1)
    b = make_sweep(small_circuits, bucket, "b6k", max_shots=6000, jobs=2)
    finish(bucket, a, shots_of=lambda s: 3000)  # a4k is not finished: 3,000 of 4,000
    finish(bucket, b)  # b6k is: 6,000 of 6,000 each
    assert set(a.plan.task_targets()) == set(b.plan.task_targets())  # the same 4 tasks

    out = tmp_path / "merged.csv"
    r = run_kiln("merge", "--bucket", str(bucket), "--out", str(out), check=True)
    assert set(shots_by_id(out).values()) == {9000}  # the sum is valid sinter statistics ...
    # ... but never a surprise: which sweeps, each one's share, and "reached" per sweep.
    assert "(4 rows from 2 sweeps)" in r.stdout and "of 8 task(s)" not in r.stdout, r.stdout
    assert "combined 2 sweeps" in r.stdout and "--sweep NAME" in r.stdout, r.stdout
    assert "sweep a4k: 4 task(s), 0 of 4 reached" in r.stdout, r.stdout
    assert "sweep b6k: 4 task(s), 4 of 4 reached" in r.stdout, r.stdout
    assert r.stdout.count("9,000 shots = a4k 3,000 + b6k 6,000") == 4, r.stdout

    r = run_kiln("merge", "--bucket", str(bucket), "--out", str(out), "--json", check=True)
    data = json.loads(r.stdout)
    assert data["sweeps"] == ["a4k", "b6k"]
    assert data["reached"] == 4 and data["tasks"] == 8
    assert len(data["combined"]) == 4
    for c in data["combined"]:
        assert c["shots_per_sweep"] == {"a4k": 3000, "b6k": 6000} and c["shots"] == 9000

    # One sweep: no combining to report.
    r = run_kiln("merge", "--bucket", str(bucket), "--out", str(out), "--sweep", "b6k", check=True)
    assert "4 of 4 task(s) reached" in r.stdout and "combined" not in r.stdout, r.stdout
    assert set(shots_by_id(out).values()) == {6000}


# ------------------------------------------------------------------------------------------------
# Issue 13.8: status and merge only read; a lost fragment is shown as lost


def _as_nobody(argv: list[str]) -> list[str]:
    """Run as an unprivileged user when we are root (root may write anywhere)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


@pytest.mark.slow  # two CLI runs as another user: ~1 s
def test_status_and_merge_read_a_read_only_bucket(small_circuits):
    top = pathlib.Path(tempfile.mkdtemp(prefix="kiln-ro-"))  # outside pytest's root-only tmp
    try:
        top.chmod(0o755)
        bucket = top / "bucket"
        m = make_sweep(small_circuits, bucket, "s", jobs=2)
        finish(bucket, m)
        writable = top / "out"
        writable.mkdir()
        writable.chmod(0o777)
        for p in [bucket, *bucket.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), QEC_KILN_HOME=str(writable / "home"),
                   QEC_KILN_WORK_DIR=str(writable / "work"), QEC_KILN_CACHE_DIR=str(writable / "c"))
        # Writing really is refused to this user:
        probe = subprocess.run(_as_nobody(["touch", str(bucket / "x")]), capture_output=True)
        assert probe.returncode != 0
        base = [sys.executable, "-m", "qec_kiln"]
        out = writable / "merged.csv"
        r = subprocess.run(_as_nobody([*base, "merge", "--bucket", str(bucket), "--out", str(out)]),
                           capture_output=True, text=True, env=env, cwd=writable)
        assert r.returncode == 0, r.stderr
        assert "4 of 4 task(s) reached" in r.stdout
        r = subprocess.run(_as_nobody([*base, "status", "--bucket", str(bucket), "--json"]),
                           capture_output=True, text=True, env=env, cwd=writable)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["fraction_done"] == 1.0
    finally:
        for p in [top, *top.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_status_shows_a_deleted_fragment_of_a_finished_batch_as_lost(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    finish(bucket, m)
    (bucket / "s" / "fragments" / "b001.csv").unlink()
    states = {b.id: JobState(b.id, "SUCCEEDED", job_id="pid 1") for b in m.batches}
    report = sweep_progress(open_bucket(str(bucket)), m, states)
    by_id = {b.batch.id: b for b in report.batches}
    assert by_id["b000"].state == "DONE"
    assert by_id["b001"].state == "LOST" and not by_id["b001"].done
    lost = [w for w in report.warnings if "b001" in w]
    assert len(lost) == 1 and "fragment is gone" in lost[0], report.warnings
    assert report.to_json()["batches"][1]["state"] == "LOST"
    # A batch whose job has not run yet is not lost.
    report = sweep_progress(open_bucket(str(bucket)), m, {})
    assert [b.state for b in report.batches] == ["DONE", "NOT STARTED"] and not report.warnings


# ------------------------------------------------------------------------------------------------
# Issue 13.9: --out writes through links and into devices and FIFOs; --out - is standard output


@pytest.fixture
def finished(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    finish(bucket, m)
    frags = [bucket / "s" / "fragments" / f"{b.id}.csv" for b in m.batches]
    return bucket, sinter_combine(*frags)


def test_out_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path, finished):
    bucket, expected = finished
    target = tmp_path / "results" / "merged.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    merge_sweeps(str(bucket), link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == expected
    # A dangling link: its target is created.
    target.unlink()
    merge_sweeps(str(bucket), link)
    assert link.is_symlink() and target.read_bytes() == expected


def test_out_into_a_fifo_writes_it_and_keeps_the_fifo(tmp_path, finished):
    bucket, expected = finished
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-like"  # like /dev/stdout -> /proc/self/fd/1 -> a pipe
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    merge_sweeps(str(bucket), link)
    reader.join(timeout=30)
    assert got == [expected]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_out_into_a_character_device_writes_it_and_keeps_the_device(tmp_path, finished):
    bucket, _ = finished
    null = tmp_path / "null"  # a node of the null device, like /dev/null
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    merge_sweeps(str(bucket), null)
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_out_dash_writes_standard_output(tmp_path, finished):
    bucket, expected = finished
    r = subprocess.run([sys.executable, "-m", "qec_kiln", "merge", "--bucket", str(bucket),
                        "--out", "-"], capture_output=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert b"4 of 4 task(s) reached" in r.stderr
    assert not list(tmp_path.glob("-*"))
    r = run_kiln("merge", "--bucket", str(bucket), "--out", "-", "--json", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "--json" in r.stderr


def test_a_local_merge_starts_like_sinter_combine(tmp_path, finished):
    """``qec-kiln merge`` of a folder (through ``_command._main.main``, as the command runs) imports no
    cloud SDK nor bucket module, no backend, view, API, sweep settings, rich or YAML, builds
    only merge's flags, and keeps numpy's BLAS to one thread (a merge does no linear algebra):
    it starts as ``sinter combine`` does, and writes the same bytes."""
    bucket, expected = finished
    code = (
        "import json, os, sys, threading\n"
        "from qec_kiln._command import _main as _cli\n"
        f"code = _cli.main(['merge', '--bucket', {str(bucket)!r}, '--out', 'm.csv'])\n"
        "heavy = ('rich', 'yaml', 'boto3', 'botocore', 'google', 'sky', 'qec_kiln._backends', "
        "'qec_kiln._view', 'qec_kiln._command._main_status', 'qec_kiln._prepare', "
        "'qec_kiln._planning', 'qec_kiln._sweep.spec', "
        "'qec_kiln._storage._s3', 'qec_kiln._storage._gcs')\n"
        "print(json.dumps([code, sorted(n for n in sys.modules if n.startswith(heavy)), "
        "os.environ.get('OPENBLAS_NUM_THREADS')]))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [0, [], "1"], r.stderr
    assert (tmp_path / "m.csv").read_bytes() == expected
    # A BLAS setting of the caller's own is kept.
    env["OPENBLAS_NUM_THREADS"] = "3"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120)
    assert json.loads(r.stdout.splitlines()[-1])[2] == "3", r.stderr


# ------------------------------------------------------------------------------------------------
# Issue 13.15: fragments are read concurrently


class _CountsReadsInFlight:
    """A bucket mixin: each read takes ``delay`` seconds (a round trip to a cloud store), and
    ``most`` is the most reads that were in flight at once."""

    delay = 0.0

    def __init__(self, url):
        super().__init__(parse_url(url))
        self.lock = threading.Lock()
        self.now = self.most = 0

    def read_bytes(self, key, *, retry=None):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.delay)
            return super().read_bytes(key, retry=retry)
        finally:
            with self.lock:
                self.now -= 1


class SlowBucket(_CountsReadsInFlight, LocalBucket):
    """A local bucket whose reads take as long as a round trip to a cloud store (50 ms)."""

    delay = 0.05


def test_fragments_are_read_concurrently(tmp_path, small_circuits):
    from qec_kiln._sweep.fragments import read_fragments

    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=4)
    finish(bucket, m)
    slow = SlowBucket(str(bucket))
    ids = [b.id for b in m.batches] * 16  # 64 reads of 50 ms: 3.2 s one after another
    start = time.monotonic()
    frags = read_fragments(slow, m, ids, workers=16)
    took = time.monotonic() - start
    assert [f.name.rsplit("/", 1)[1] for f in frags] == [f"{i}.csv" for i in ids]  # in order
    assert slow.most >= 8, slow.most
    assert took < 3.2 / 2, took  # well under one after another (3.2 s), on a loaded machine too


class CountingS3Bucket(_CountsReadsInFlight, S3Bucket):
    """The real S3 bucket (moto's server), counting the reads in flight."""

    delay = 0.02  # a round trip to a real store


@pytest.mark.slow
def test_cloud_fragments_are_read_16_at_a_time_by_default(tmp_path, small_circuits, s3_env, caplog):
    from qec_kiln._sweep.fragments import CLOUD_READERS, read_fragments

    m = make_sweep(small_circuits, s3_env.url, "s", jobs=4)
    finish(s3_env.url, m)
    bucket = CountingS3Bucket(s3_env.url)
    ids = [b.id for b in m.batches] * 16
    frags = read_fragments(bucket, m, ids)  # the default for a cloud bucket
    assert [f.name.rsplit("/", 1)[1] for f in frags] == [f"{i}.csv" for i in ids]
    assert bucket.most == CLOUD_READERS == 16
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]  # one connection each
    report = merge_sweeps(s3_env.url, tmp_path / "merged.csv")
    assert report.reached == report.total == 4


@pytest.mark.slow
def test_an_outage_stops_the_reads_instead_of_retrying_every_fragment(small_circuits, s3_env):
    from qec_kiln._errors import StorageError
    from qec_kiln._storage import RetryPolicy
    from qec_kiln._sweep.fragments import read_fragments

    m = make_sweep(small_circuits, s3_env.url, "s", jobs=4)
    finish(s3_env.url, m)
    bucket = open_bucket(s3_env.url, retry=RetryPolicy(attempts=1, read_timeout=1, connect_timeout=1))
    ids = [b.id for b in m.batches] * 16  # 64 reads: 4 rounds of 16 of 1 s each, were all tried
    s3_env.server.pause()
    try:
        start = time.monotonic()
        frags = read_fragments(bucket, m, ids)
        took = time.monotonic() - start
    finally:
        s3_env.server.resume()
    assert all(isinstance(f, StorageError) for f in frags)
    assert sum("as reading an earlier fragment failed" in str(f) for f in frags) >= 48
    assert took < 16 / 2, took  # trying all 64 would take 16 s at least


def test_many_local_fragments_parsed_by_forked_processes_give_the_same(tmp_path, small_circuits):
    import functools

    from qec_kiln._sweep import fragments as _fragments

    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=4)
    finish(bucket, m)
    (bucket / "s" / "fragments" / "b002.csv").write_bytes(b"garbage\n")
    (bucket / "s" / "fragments" / "b003.csv").unlink()
    b = open_bucket(str(bucket))
    one = functools.partial(_fragments._read_one, b, m, [])
    ids = [x.id for x in m.batches] * 5
    here = [one(i) for i in ids]
    forked = _fragments._in_processes(one, ids, 3)
    assert [type(f) for f in forked] == [type(f) for f in here]
    assert type(here[2]).__name__ == "KilnError" and here[3] is None
    for a, c in zip(forked, here, strict=True):
        if a is not None and not isinstance(a, Exception):
            assert (a.name, a.stats, a.clean) == (c.name, c.stats, c.clean)
        else:
            assert str(a) == str(c)
    assert _fragments._local_processes(10) == 1  # few fragments: this process alone


def test_many_local_fragments_are_parsed_by_one_process_per_core():
    # In a fresh interpreter (no other thread): 2,000 fragments get one process per core, up to 4.
    code = "from qec_kiln._sweep.fragments import _local_processes as f; print(f(2000), f(499), f(10))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cores = len(os.sched_getaffinity(0))
    assert out.stdout.split() == [str(min(4, cores)), "1", "1"]


def test_read_fragments_keeps_only_the_stats_unless_asked(tmp_path, small_circuits):
    from qec_kiln._sweep.fragments import read_fragment, read_fragments

    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=2)
    finish(bucket, m)
    b = open_bucket(str(bucket))
    ids = [x.id for x in m.batches]
    whole = [read_fragment(b, m, i) for i in ids]
    light = read_fragments(b, m, ids)
    kept = read_fragments(b, m, ids, keep_bytes=True)
    assert all(w.clean for w in whole)
    assert [f.stats for f in light] == [w.stats for w in whole] == [f.stats for f in kept]
    assert [f.clean for f in light] == [b"", b""]
    assert [f.clean for f in kept] == [w.clean for w in whole]


@pytest.mark.slow  # six CLI runs: ~2 s
def test_a_sweep_folder_without_its_manifest_is_named_by_merge_and_status(tmp_path, small_circuits,
                                                                          kiln):
    bucket = tmp_path / "bucket"
    other = write_surface_circuits(tmp_path / "other", noises=(0.002, 0.005))  # other tasks
    for name, circuits in (("ok", small_circuits), ("gone", other)):
        finish(bucket, make_sweep(circuits, bucket, name))
    (bucket / "gone" / "manifest.json").unlink()
    out = tmp_path / "merged.csv"
    r = kiln("merge", "--bucket", str(bucket), "--out", str(out), check=True)
    warning = f"warning: {bucket}/gone holds 2 fragment(s) but no manifest.json (was it deleted?)"
    assert warning in r.stderr, r.stderr
    assert len(sinter.read_stats_from_csv_files(str(out))) == 4  # the sweep "ok" alone
    r = kiln("status", "--bucket", str(bucket), check=True)
    assert warning in r.stderr, r.stderr
    r = kiln("merge", "--bucket", str(bucket), "--sweep", "gone", "--out", str(out))
    assert r.returncode == 2 and "gone holds 2 fragment(s) but no manifest.json" in r.stderr
    shutil.rmtree(bucket / "ok")
    for cmd in ("merge", "status"):  # no sweep left: the error names the folder
        r = kiln(cmd, "--bucket", str(bucket), *(["--out", str(out)] if cmd == "merge" else []))
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith(f"error: {bucket}/gone holds 2 fragment")


def _dies_in_a_forked_share(parent: int, item: str) -> str:
    if os.getpid() != parent and item == "c":
        os.kill(os.getpid(), 9)  # as the kernel's OOM killer would
    return item.upper()


def test_a_forked_share_whose_process_dies_is_parsed_here():
    import functools

    from qec_kiln._sweep import fragments as _fragments

    one = functools.partial(_dies_in_a_forked_share, os.getpid())
    assert _fragments._in_processes(one, list("abcdef"), 3) == list("ABCDEF")

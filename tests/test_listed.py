"""Reading a sweep's many fragments fast, and exactly: a cloud bucket's listed view (one listing,
missing objects cost no request, unchanged objects come from the local cache) and merge's
forked shares (sums handed through the pipes in sinter combine's order)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kiln_helpers import ON_CLOUDS, finish, make_sweep, row, sinter_combine, write_fragment

from qec_kiln._errors import ObjectNotFound, StorageError
from qec_kiln._report import merge as merge_mod
from qec_kiln._report.merge import merge_sweeps
from qec_kiln._report.status import sweep_progress
from qec_kiln._storage import listed, open_bucket
from qec_kiln._sweep.fragments import read_fragments
from qec_kiln._sweep.manifest import load_manifest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh QEC_KILN_HOME: nothing cached yet."""
    monkeypatch.setenv("QEC_KILN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QEC_KILN_BUCKET_CACHE", raising=False)
    return tmp_path / "home"


def test_a_local_folder_is_its_own_view(tmp_path):
    b = open_bucket(str(tmp_path / "b"))
    assert listed(b, "s/fragments/") is b
    assert b.prefetch(["s/fragments/b000.csv"]) == 0


@ON_CLOUDS
def test_a_view_lists_once_fetches_once_and_sees_changes(bucket_env, home):
    b = open_bucket(bucket_env.url)
    for i in range(3):
        b.write_bytes(f"s/fragments/b{i:03d}.csv", f"v1 {i}\n".encode())
    b.write_bytes("s/manifest.json", b"{}")
    keys = [f"s/fragments/b{i:03d}.csv" for i in range(4)]  # b003 does not exist
    with listed(b, "s/fragments/") as view:
        assert view.list_keys("s/fragments/") == keys[:3]
        assert view.prefetch(keys) == 3
        assert [view.read_bytes(k) for k in keys[:3]] == [f"v1 {i}\n".encode() for i in range(3)]
        with pytest.raises(ObjectNotFound):
            view.read_bytes(keys[3])  # not listed: no request
        assert view.read_bytes("s/manifest.json") == b"{}"  # outside the prefix: the bucket's
    assert list((home / "bucket-cache").glob("*.pack"))
    b.write_bytes(keys[1], b"v2 1\n")  # changed since
    b.delete(keys[2])  # gone since
    with listed(b, "s/fragments/") as view:
        fetched = view.prefetch(keys)
        assert [view.read_bytes(k) for k in keys[:2]] == [b"v1 0\n", b"v2 1\n"]
        with pytest.raises(ObjectNotFound):
            view.read_bytes(keys[2])
    if bucket_env.kind == "s3":  # the GCS emulator lists no generations: it refetches all
        assert fetched == 1
    with listed(b, "s/fragments/") as view:  # the cache forgot the deleted one
        assert view.read_bytes(keys[1]) == b"v2 1\n"


@ON_CLOUDS
def test_merge_and_status_of_a_cloud_sweep_equal_sinter_combine_cold_and_warm(
        bucket_env, home, tmp_path, small_circuits, monkeypatch):
    m = make_sweep(small_circuits, bucket_env.url, "s", jobs=3)
    finish(bucket_env.url, m)
    local = tmp_path / "local"
    for b in m.batches:
        path = local / f"{b.id}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(open_bucket(bucket_env.url).read_bytes(f"s/fragments/{b.id}.csv"))
    want = sinter_combine(*(local / f"{b.id}.csv" for b in m.batches))
    for run in ("cold", "warm", "off"):
        if run == "off":
            monkeypatch.setenv("QEC_KILN_BUCKET_CACHE", "0")
        merge_sweeps(bucket_env.url, str(tmp_path / f"{run}.csv"), sweep="s")
        assert (tmp_path / f"{run}.csv").read_bytes() == want, run
        report = sweep_progress(open_bucket(bucket_env.url), load_manifest(
            open_bucket(bucket_env.url), "s"))
        assert all(bp.done for bp in report.batches), run


def test_a_failed_read_stops_the_others(tmp_path, home, monkeypatch):
    """After one fetch fails (its retries spent), the view tries no other object."""
    from qec_kiln._storage._listed import ListedView

    b = open_bucket(str(tmp_path / "b"))
    keys = [f"s/fragments/b{i:03d}.csv" for i in range(5)]
    for k in keys:
        b.write_bytes(k, b"x\n")
    calls = []

    def failing(key, *, retry=None):
        calls.append(key)
        raise StorageError(f"{key}: unreachable")

    view = ListedView(b, "s/fragments/", "test")
    monkeypatch.setattr(b, "read_versioned", failing)
    view.prefetch(keys, workers=1)
    assert calls == keys[:1]
    with pytest.raises(StorageError, match="unreachable"):
        view.read_bytes(keys[0])  # its own error
    with pytest.raises(StorageError, match="not read, as reading an earlier object failed"):
        view.read_bytes(keys[3])
    assert calls == keys[:1]


# ------------------------------------------------------------------------------------------------
# merge's forked shares


def _serial(bucket, m, skip_bad):
    ids = [b.id for b in m.batches]
    return merge_mod._fold(merge_mod._Folded(), m.sweep, list(m.batches),
                           read_fragments(bucket, m, ids, workers=1), skip_bad)


@pytest.mark.parametrize("skip_bad", [True, False])
def test_forked_shares_sum_exactly_as_one_process(tmp_path, small_circuits, skip_bad,
                                                  monkeypatch):
    bucket_url = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket_url, "s", jobs=8)
    finish(bucket_url, m, shots_of=lambda s: 997 + 13 * len(s.circuit))
    ids = [b.id for b in m.batches]
    assert len(ids) >= 4, ids  # a missing and a damaged fragment in different shares
    (bucket_url / "s" / "fragments" / f"{ids[-1]}.csv").write_bytes(b"garbage\n")
    (bucket_url / "s" / "fragments" / f"{ids[1]}.csv").unlink()
    b = open_bucket(str(bucket_url))
    here = _serial(b, m, skip_bad)
    parent, real, parsed_here = os.getpid(), merge_mod.read_fragments, []

    def counted(bucket, manifest, ids, **kwargs):
        if os.getpid() == parent:
            parsed_here.append(ids)
        return real(bucket, manifest, ids, **kwargs)

    monkeypatch.setattr(merge_mod, "read_fragments", counted)
    for procs in (2, 3, 4):
        parsed_here.clear()
        forked = merge_mod._fold_in_processes(merge_mod._Folded(), b, m, procs, skip_bad)
        assert len(parsed_here) == 1, parsed_here  # the other shares were parsed by the children
        assert [s.to_csv_line() for s in forked.sums.values()] == \
            [s.to_csv_line() for s in here.sums.values()]
        assert forked.sums == here.sums  # seconds included: the same additions in the same order
        assert (forked.missing, forked.warnings, str(forked.error)) == \
            (here.missing, here.warnings, str(here.error))


def test_a_share_whose_process_dies_or_cannot_start_is_parsed_here(tmp_path, small_circuits,
                                                                   monkeypatch):
    bucket_url = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket_url, "s", jobs=6)
    finish(bucket_url, m)
    b = open_bucket(str(bucket_url))
    here = _serial(b, m, True)
    parent = os.getpid()
    real = merge_mod.read_fragments

    def dies_in_a_child(*args, **kwargs):
        if os.getpid() != parent:
            os._exit(9)
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_mod, "read_fragments", dies_in_a_child)
    assert merge_mod._fold_in_processes(merge_mod._Folded(), b, m, 3, True).sums == here.sums
    monkeypatch.setattr(merge_mod, "_fork_share", lambda *a: None)
    assert merge_mod._fold_in_processes(merge_mod._Folded(), b, m, 3, True).sums == here.sums


def test_a_merge_forks_only_where_the_fragments_bytes_repay_it(tmp_path, small_circuits,
                                                                monkeypatch):
    """A forked share costs ~15 ms of CPU: merge forks by the fragments' size (estimated from a
    few of them), so 200 small fragments (0.5 MB) parse here, and big ones are split even when
    there are few."""
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=8)
    finish(bucket, m)
    ids = [b.id for b in m.batches]
    b = open_bucket(str(bucket))
    sizes = [len(b.read_bytes(f"s/fragments/{i}.csv")) for i in ids]
    estimate = merge_mod._estimated_bytes(b, "s", ids)
    assert min(sizes) * len(ids) <= estimate <= max(sizes) * len(ids)
    (bucket / "s" / "fragments" / f"{ids[0]}.csv").unlink()  # a missing one counts nothing
    assert merge_mod._estimated_bytes(b, "s", ids) < estimate
    code = ("from qec_kiln._report.merge import _local_processes as f, BYTES_PER_PROCESS as B; "
            "print(f(200, 480_000), f(2000, 4_800_000), f(4, 8 * B), f(2000))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cores = min(4, len(os.sched_getaffinity(0)))  # in a fresh interpreter, no other thread
    assert out.stdout.split() == ["1", str(min(cores, 4)), str(min(cores, 2)), str(cores)]


def test_merge_of_forked_shares_is_sinter_combine(tmp_path, small_circuits, monkeypatch):
    bucket = tmp_path / "bucket"
    m = make_sweep(small_circuits, bucket, "s", jobs=8)
    for i, b in enumerate(m.batches):  # several rows per task, seconds that do not add exactly
        write_fragment(bucket, m, b.id, [row(m, s.strong_id, 1000 + 17 * i + r, r)
                                         for s in b.shards for r in range(3)])
    monkeypatch.setattr(merge_mod, "FRAGMENTS_PER_PROCESS", 1)
    monkeypatch.setattr(merge_mod, "BYTES_PER_PROCESS", 1)  # small fragments: forked all the same
    assert merge_mod._local_processes(len(m.batches)) == min(4, len(os.sched_getaffinity(0))) \
        or merge_mod._local_processes(len(m.batches)) == 1  # 1: another thread runs here
    merge_sweeps(str(bucket), str(tmp_path / "k.csv"), sweep="s")
    paths = [bucket / "s" / "fragments" / f"{b.id}.csv" for b in m.batches]
    assert (tmp_path / "k.csv").read_bytes() == sinter_combine(*paths)

"""Exactly one writer per batch: leases (local, moto S3, fake-gcs-server), the runner's
compare-and-swap uploads, and two launches of one sweep at the same time (real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sinter
from kiln_helpers import make_sweep, total_shots, wait_until, write_surface_circuits

from qec_kiln._errors import Exit, PreconditionFailed
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.lease import LeaseHeld, acquire, release, renew
from qec_kiln._sweep.manifest import fragment_key

KEY = "s/leases/b000.json"


@pytest.fixture
def gcs_bucket_fixture() -> str:
    """``bucket_url``'s GCS case on fake-gcs-server, which enforces preconditions."""
    return "fake_gcs_env"


def test_lease_acquire_renew_release(bucket_url: str) -> None:
    bucket = open_bucket(bucket_url)
    lease = acquire(bucket, KEY, seconds=60)
    with pytest.raises(LeaseHeld, match="another run-batch of the same batch is running"):
        acquire(bucket, KEY, seconds=60, watch=False)
    before = lease.version
    renew(lease)
    assert lease.version != before
    stale = type(lease)(**{**lease.__dict__, "version": before})
    with pytest.raises(PreconditionFailed):
        # A renewal on an old version fails: the lease is not blindly overwritten. (Its clock
        # differs from the renewal's above: identical bytes within one millisecond would count
        # as a retried write that had landed, by design.)
        renew(stale, clock=lambda: time.time() + 1)
    release(lease)
    other = acquire(bucket, KEY, seconds=60, watch=False)  # a released lease is free at once
    assert other.owner["token"] != lease.owner["token"]


def test_expired_lease_is_taken_over_and_the_old_holder_loses_it(bucket_url: str) -> None:
    bucket = open_bucket(bucket_url)
    old = acquire(bucket, KEY, seconds=60)
    later = lambda: time.time() + 61  # noqa: E731 - a clock past the old lease's expiry
    new = acquire(bucket, KEY, seconds=60, watch=False, clock=later)
    assert json.loads(bucket.read_bytes(KEY))["owner"] == new.owner
    with pytest.raises(PreconditionFailed):
        renew(old)  # the old holder learns it lost the batch
    renew(new)


@pytest.mark.slow
def test_watching_a_lease_tells_a_live_holder_from_a_dead_one(bucket_url: str) -> None:
    bucket = open_bucket(bucket_url)
    # The holder renews every 0.2 s for a 3 s lease: a renewal round trip through a loaded
    # emulator may stall a second or two without the lease lapsing under the watcher.
    holder = acquire(bucket, KEY, seconds=3)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(0.2):
            renew(holder)

    renewer = threading.Thread(target=keep_renewing)
    renewer.start()
    try:
        start = time.monotonic()
        with pytest.raises(LeaseHeld):
            acquire(bucket, KEY, seconds=3, poll=0.1)  # sees a renewal: the holder is alive
        assert time.monotonic() - start < 60  # not the 3 s expiry's loop forever
    finally:
        stop.set()
        renewer.join()
    start = time.monotonic()
    taker = acquire(bucket, KEY, seconds=60, poll=0.1)  # no renewals: taken over at expiry
    assert 1.5 < time.monotonic() - start < 60  # at expiry (3 s), not at once, not never
    assert json.loads(bucket.read_bytes(KEY))["owner"] == taker.owner


def test_lease_of_a_dead_pid_on_this_host_is_free_at_once(tmp_path: Path) -> None:
    bucket = open_bucket(str(tmp_path / "bucket"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    owner = {"host": socket.gethostname(), "pid": dead.pid, "token": "x"}
    bucket.write_if(KEY, json.dumps({"owner": owner, "expires": time.time() + 3600}).encode(), None)
    start = time.monotonic()
    acquire(bucket, KEY, seconds=60)
    assert time.monotonic() - start < 30  # at once, not after the hour-long expiry


@pytest.mark.slow
def test_runner_never_overwrites_a_fragment_someone_else_wrote(tmp_path: Path) -> None:
    """While a run-batch runs, another writer replaces its fragment: the runner's next upload (a
    compare-and-swap on the version it wrote) fails, it stops its sinter and exits 3."""
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(5,), noises=(0.003,))
    manifest = make_sweep(circuits, str(tmp_path / "bucket"), "cas",
                          max_shots=10**9, max_errors=10**9, jobs=1, record_bucket=True)
    bucket = open_bucket(str(tmp_path / "bucket"))
    batch = manifest.batches[0].id
    fkey = fragment_key("cas", batch)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qec_kiln", "run-batch", "--bucket", bucket.url, "--sweep", "cas",
         "--batch", batch, "--sync-seconds", "0.3", "--processes", "1",
         "--work-dir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        def uploaded() -> bool:
            if bucket.exists(fkey) and total_shots(bucket.read_bytes(fkey)) > 0:
                return True
            assert proc.poll() is None
            return False

        wait_until(uploaded, 60, "a fragment with rows", interval=0.05)
        theirs = bucket.read_bytes(fkey)
        bucket.write_bytes(fkey, theirs)  # same bytes, but a new version: not this runner's
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == Exit.CONFLICT, out
    assert "another run-batch of the same batch is running" in out and "final upload skipped" in out
    assert bucket.read_bytes(fkey) == theirs  # never overwritten
    sinter_pids = (tmp_path / "work" / "cas" / batch / "sinter.pgid")
    assert not sinter_pids.exists()  # its sinter was stopped and its group cleaned up


def _launch(circuits: Path, bucket: Path, home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "QEC_KILN_HOME": str(home / "home"), "QEC_KILN_WORK_DIR": str(home / "work")}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qec_kiln", "launch", str(circuits), "--max-shots", "3000",
             "--max-errors", "1000000", "--bucket", str(bucket), "--name", "twice", "--jobs", "1",
             "--sync-seconds", "0.5", "--processes", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_two_launches_of_one_sweep_at_once_count_every_shot_once(tmp_path: Path) -> None:
    """The issue's trial, 10 times: two `qec-kiln launch` of one sweep started together (sharing a
    machine's state folder, or as if from two machines). Every time, merge gives exactly
    max_shots per task, and neither launch reports a failure."""
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001, 0.01))
    times, contended = [], 0
    for trial in range(10):
        bucket = tmp_path / f"bucket{trial}"
        shared = trial % 2 == 0  # even trials: one machine; odd: two "machines"
        homes = [tmp_path / f"home{trial}"] * 2 if shared else [
            tmp_path / f"home{trial}a", tmp_path / f"home{trial}b"]
        logs = [tmp_path / f"launch{trial}{i}.log" for i in range(2)]
        start = time.monotonic()
        procs = [_launch(circuits, bucket, homes[i], logs[i]) for i in range(2)]
        codes = [p.wait(timeout=120) for p in procs]
        times.append(time.monotonic() - start)
        outputs = "\n---\n".join(log.read_text() for log in logs)
        assert codes == [0, 0], f"trial {trial}: {codes}\n{outputs}"
        assert "failed (exit" not in outputs and "batch(es) failed" not in outputs, outputs
        stats = sinter.read_stats_from_csv_files(
            *sorted((bucket / "twice" / "fragments").glob("*.csv")))
        assert len(stats) == 2, outputs
        assert [s.shots for s in stats] == [3000, 3000], (trial, stats, outputs)
        contended += "run by another run-batch" in outputs
    print(f"\n10 trials of two launches at once: {min(times):.1f}-{max(times):.1f} s each; in "
          f"{contended} a batch was run by the other launch's run-batch")


@pytest.mark.slow  # the S3 server with IAM starts for it: seconds
def test_the_read_only_keys_list_and_read_but_cannot_write(s3_auth) -> None:
    """What the read-only tests rely on, whatever moto release the lock holds: with the
    read-only policy a client lists (ListObjectsV2 and ListObjects), heads and reads, and every
    write is denied (AccessDenied)."""
    import botocore.exceptions

    key = f"ro-probe-{os.getpid()}-{time.time_ns()}.txt"
    s3_auth.server.client(s3_auth.access_key_id, s3_auth.secret_access_key).put_object(
        Bucket=s3_auth.bucket, Key=key, Body=b"x")
    ro = s3_auth.server.client(s3_auth.readonly_access_key_id, s3_auth.readonly_secret_access_key)
    assert key in [o["Key"] for o in ro.list_objects_v2(Bucket=s3_auth.bucket)["Contents"]]
    assert key in [o["Key"] for o in ro.list_objects(Bucket=s3_auth.bucket)["Contents"]]
    assert ro.get_object(Bucket=s3_auth.bucket, Key=key)["Body"].read() == b"x"
    assert ro.head_object(Bucket=s3_auth.bucket, Key=key)["ContentLength"] == 1
    ro.head_bucket(Bucket=s3_auth.bucket)
    for write in (lambda: ro.put_object(Bucket=s3_auth.bucket, Key=key, Body=b"y"),
                  lambda: ro.delete_object(Bucket=s3_auth.bucket, Key=key)):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            write()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.slow  # the S3 server with IAM starts for it: seconds
def test_read_only_credentials_end_run_batch_at_once(s3_auth, monkeypatch, tmp_path: Path) -> None:
    """Credentials that can read the bucket but not write it: run-batch fails its first write (the
    lease) with one `error:` line and exit 2, which the task YAML never retries (only 75 is), and
    leaves nothing in the bucket."""
    from kiln_helpers import run_kiln

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_auth.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_auth.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_auth.secret_access_key)
    url = f"s3://{s3_auth.bucket}/ro-{os.getpid()}-{time.time_ns()}"
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001,))
    make_sweep(circuits, url, "ro", max_shots=1_000, max_errors=10, jobs=1, record_bucket=True)
    bucket = open_bucket(url)
    before = sorted(bucket.list_keys("ro/"))
    started = time.monotonic()
    proc = run_kiln("run-batch", "--bucket", url, "--sweep", "ro", "--batch", "b000",
                    "--sync-seconds", "1", timeout=120, env={
                        "AWS_ACCESS_KEY_ID": s3_auth.readonly_access_key_id,
                        "AWS_SECRET_ACCESS_KEY": s3_auth.readonly_secret_access_key,
                        "QEC_KILN_WORK_DIR": str(tmp_path / "work")})
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, proc.stderr
    assert "S3 denied writing" in errors[0] and "ro/leases/b000.json" in errors[0], errors
    assert "s3:PutObject" in errors[0]  # says what to grant
    assert "Traceback" not in proc.stderr and "sinter collect" not in proc.stderr
    assert elapsed < 60
    assert sorted(bucket.list_keys("ro/")) == before
    # SkyPilot retries only recover_on_exit_codes (75), never exit 2 (max_restarts_on_errors 0).
    import yaml

    from qec_kiln._backends.skypilot.backend import packaged_yaml_text
    rec = yaml.safe_load(packaged_yaml_text("sinter_job.yaml"))["resources"]["job_recovery"]
    assert rec["recover_on_exit_codes"] == [75] and rec["max_restarts_on_errors"] == 0


@pytest.mark.slow  # two plans, then a real local run: ~3 s
def test_a_launch_that_loses_the_race_to_create_a_sweep_runs_the_winners_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two launches of one sweep at once with different partitions (--jobs 1 and --jobs 2):
    the manifest the first one created is never replaced, and the other goes on with its plan,
    so no batch of one plan runs under the other (a task's shards differ between plans)."""
    import qec_kiln
    from qec_kiln import _prepare
    from qec_kiln._prepare import Fleet, prepare_sweep
    from qec_kiln._sweep.manifest import load_manifest

    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001, 0.01))
    url = str(tmp_path / "bucket")
    real_upload = _prepare.upload_sweep
    winner = {}

    def the_other_launch_wins(bucket, manifest, files, log, objects=None):  # it uploads first
        fleet = Fleet.build(dict(decoders=["pymatching"], max_shots=2000, max_errors=10**6,
                                 bucket=url, name="race", jobs=2))
        other = prepare_sweep(str(circuits), fleet, bucket, lambda s: None)
        assert real_upload(bucket, other.manifest, other.circuits, lambda s: None) is other.manifest
        winner["plan"] = other.manifest.dumps()
        return real_upload(bucket, manifest, files, log, objects)

    monkeypatch.setattr(_prepare, "upload_sweep", the_other_launch_wins)
    said: list[str] = []
    result = qec_kiln.launch(circuits, bucket=url, name="race", jobs=1, max_shots=2000,
                             max_errors=10**6, backend_options={"processes": 1}, log=said.append)
    bucket = open_bucket(url)
    assert bucket.read_bytes("race/manifest.json") == winner["plan"]  # never replaced
    assert any("created in" in s and "by another launch at the same time" in s for s in said), said
    stored = load_manifest(bucket, "race")
    assert sorted(result.launched) == [b.id for b in stored.batches] == ["b000", "b001"]
    fragments = sorted((tmp_path / "bucket" / "race" / "fragments").glob("*.csv"))
    stats = sinter.read_stats_from_csv_files(*fragments)
    assert sorted(s.shots for s in stats) == [2000, 2000]


@pytest.mark.slow  # a real launch, then two more: ~3 s
def test_a_sweep_whose_manifest_was_deleted_is_not_planned_again(tmp_path: Path) -> None:
    from kiln_helpers import run_kiln

    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001,))
    bucket = tmp_path / "bucket"
    args = ("launch", str(circuits), "--bucket", str(bucket), "--name", "s", "--max-shots", "500",
            "--processes", "1")
    run_kiln(*args, check=True)
    (bucket / "s" / "manifest.json").unlink()
    before = sorted(p.relative_to(bucket) for p in bucket.rglob("*"))
    proc = run_kiln(*args, "--jobs", "2")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "(1 fragment(s)) but no manifest.json" in last, proc.stderr
    assert "--name NEW" in last
    assert sorted(p.relative_to(bucket) for p in bucket.rglob("*")) == before  # nothing written
    # A batch still running before its first sync has only its lease there: refused as well.
    for old in ("fragments", "logs"):
        shutil.rmtree(bucket / "s" / old)
    proc = run_kiln(*args, "--jobs", "2")
    assert proc.returncode == 2 and "holds 1 object(s) of a run (0 fragment(s))" in proc.stderr


def test_a_circuit_left_with_other_contents_is_never_replaced(tmp_path: Path) -> None:
    from kiln_helpers import run_kiln

    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001,))
    name = next(circuits.glob("*.stim")).name
    left = tmp_path / "bucket" / "s" / "circuits" / name  # an interrupted launch of other circuits
    left.parent.mkdir(parents=True)
    left.write_text("H 0\nM 0\n")
    proc = run_kiln("launch", str(circuits), "--bucket", str(tmp_path / "bucket"), "--name", "s",
                    "--max-shots", "500", "--processes", "1")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "already exists with other contents" in last and name in last, proc.stderr
    assert left.read_text() == "H 0\nM 0\n"
    assert not (tmp_path / "bucket" / "s" / "manifest.json").exists()


def test_a_create_the_bucket_refuses_with_nothing_there_is_not_blamed_on_another_launch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that answers a conflict to a create-if-absent, with no object there: launch says
    so and starts nothing (it never goes on with a plan that was not stored)."""
    import qec_kiln
    from qec_kiln._storage import LocalBucket

    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001,))
    real = LocalBucket._write_if

    def conflict_on_the_manifest(self, key, data, version, *, retry):
        if key.endswith("manifest.json"):
            raise PreconditionFailed(f"{self.url_for(key)}: conflicting conditional operation")
        return real(self, key, data, version, retry=retry)

    monkeypatch.setattr(LocalBucket, "_write_if", conflict_on_the_manifest)
    with pytest.raises(qec_kiln.KilnError, match="refused to create it .* is not there; launch again"):
        qec_kiln.launch(circuits, bucket=tmp_path / "bucket", name="c", max_shots=500)
    assert not (tmp_path / "bucket" / "c" / "manifest.json").exists()
    assert not (tmp_path / "bucket" / "c" / "leases").exists()  # no batch started


def test_a_manifest_created_between_the_check_and_the_listing_is_reused(tmp_path: Path) -> None:
    """The race seen under load: launch A finds no manifest, launch B then creates it, and A
    lists the folder. A must take B's plan, not call B's manifest an orphan left by a run."""
    from qec_kiln._prepare import Fleet, prepare_sweep

    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001,))
    url = str(tmp_path / "bucket")
    made = make_sweep(circuits, url, "race", max_shots=1000, max_errors=10, jobs=1, record_bucket=True)
    bucket = open_bucket(url)
    exists = bucket.exists
    calls = []

    def late_exists(key: str) -> bool:  # the first look misses the manifest B is writing
        calls.append(key)
        return False if len(calls) == 1 else exists(key)

    bucket.exists = late_exists  # type: ignore[method-assign]
    fleet = Fleet.build(dict(max_shots=1000, max_errors=10, name="race", jobs=1, bucket=url))
    again = prepare_sweep(circuits, fleet, bucket, lambda line: None)
    assert again.exists and len(calls) == 2
    assert again.manifest.dumps() == made.dumps()

"""The local backend with its bucket on real object-store APIs: moto's S3 server and the GCS
emulator, both on 127.0.0.1 (fixtures in fixtures_servers.py). No mocks, no credentials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import sinter
from kiln_helpers import (
    ON_CLOUDS,
    REPO,
    fragment_rows,
    make_sweep,
    shots_per_task,
    wait_for_uploaded_rows,
    write_surface_circuits,
)

from qec_kiln._storage import open_bucket


@ON_CLOUDS
@pytest.mark.slow
def test_full_sweep_merges_from_the_object_store(tmp_path, small_circuits, bucket_env, kiln):
    r = kiln("launch", str(small_circuits), "--max-shots", "5_000", "--max-errors", "50",
             "--bucket", bucket_env.url, "--name", "cloud", "--jobs", "2", check=True)
    assert "all 2 batch(es) finished" in r.stderr
    bucket = open_bucket(bucket_env.url)
    keys = bucket.list_keys("cloud/")
    assert "cloud/manifest.json" in keys
    assert {"cloud/fragments/b000.csv", "cloud/fragments/b001.csv"} <= set(keys)
    assert sum(k.startswith("cloud/circuits/") for k in keys) == 4
    out = tmp_path / "merged.csv"
    r = kiln("merge", "--bucket", bucket_env.url, "--out", str(out), check=True)
    assert "4 of 4 task(s) reached" in r.stdout
    stats = sinter.read_stats_from_csv_files(str(out))
    rows = [row for b in ("b000", "b001")
            for row in fragment_rows(bucket.read_bytes(f"cloud/fragments/{b}.csv"))]
    assert sum(s.shots for s in stats) == sum(r.shots for r in rows)
    assert sum(s.errors for s in stats) == sum(r.errors for r in rows)
    r = kiln("status", "--bucket", bucket_env.url, "--sweep", "cloud", check=True)
    assert "100% done" in r.stdout


@ON_CLOUDS
@pytest.mark.slow
def test_run_batch_killed_and_restarted_against_the_object_store(tmp_path, bucket_env, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.001, 0.003))
    max_shots = 200_000
    # Plan and upload only (the launch itself is done by hand below, as a node would).
    r = kiln("launch", str(circuits), "--max-shots", str(max_shots), "--max-errors", "1000000",
             "--bucket", bucket_env.url, "--name", "kill", "--jobs", "1", "--dry-run", check=True)
    assert "nothing was uploaded" in r.stdout
    assert open_bucket(bucket_env.url).list_keys("kill/") == []
    make_sweep(circuits, bucket_env.url, "kill", max_shots=max_shots, max_errors=1_000_000, jobs=1)
    bucket = open_bucket(bucket_env.url)

    argv = [sys.executable, "-m", "qec_kiln", "run-batch", "--bucket", bucket_env.url, "--sweep", "kill",
            "--batch", "b000", "--processes", "1", "--sync-seconds", "0.5"]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    snapshot = wait_for_uploaded_rows(bucket, "kill/fragments/b000.csv", 2, timeout=90)
    assert len(fragment_rows(snapshot)) >= 2, "no upload before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = bucket.read_bytes("kill/fragments/b000.csv")

    r = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    final = bucket.read_bytes("kill/fragments/b000.csv")
    assert final.startswith(at_kill)
    assert sorted(shots_per_task(final).values()) == [max_shots, max_shots]


@pytest.mark.slow
def test_original_merge_command_verbatim_on_s3(tmp_path, s3_env, small_circuits, kiln):
    s3_env.server.client().create_bucket(Bucket="sinter-results")
    kiln("launch", str(small_circuits), "--max-shots", "2_000", "--max-errors", "20",
         "--bucket", "s3://sinter-results", "--jobs", "1", check=True)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "merge.py"), "--bucket",
                        "s3://sinter-results", "--out", "merged.csv"], cwd=tmp_path,
                       capture_output=True, text=True, env=dict(os.environ, **s3_env.env))
    assert r.returncode == 0, r.stderr
    assert len(sinter.read_stats_from_csv_files(str(tmp_path / "merged.csv"))) == 4

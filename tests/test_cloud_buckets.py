"""The local backend with its bucket on real object-store APIs: moto's S3 server and the GCS
emulator, both on 127.0.0.1 (fixtures in fixtures_servers.py). No mocks, no credentials. A run-batch
killed and restarted on every kind of store: test_local_sweep.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sinter
from kiln_helpers import (
    ON_CLOUDS,
    REPO,
    fragment_rows,
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

"""The whole pipeline on the embedded default: local backend, local-directory bucket, real sinter
(a run-batch killed and restarted: on S3 and GCS too)."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import sinter
from kiln_helpers import (
    REPO,
    fragment_rows,
    make_sweep,
    run_kiln,
    shots_per_task,
    tagged_env,
    wait_for_uploaded_rows,
    wait_no_tagged_processes,
    wait_until,
    write_surface_circuits,
)

from qec_kiln._storage import open_bucket
from qec_kiln._sweep.manifest import fragment_key, load_manifest


@pytest.mark.slow
def test_sweep_matches_plain_sinter_collect(tmp_path, small_circuits, kiln):
    bucket = tmp_path / "bucket"
    r = kiln("launch", str(small_circuits), "--max-shots", "20_000", "--max-errors", "100",
             "--bucket", str(bucket), "--name", "s1", "--jobs", "2", check=True)
    assert "all 2 batch(es) finished" in r.stderr
    merged = tmp_path / "merged.csv"
    r = kiln("merge", "--bucket", str(bucket), "--out", str(merged), check=True)
    assert "4 of 4 task(s) reached" in r.stdout

    # The merged rows are exactly the sums of the complete fragment rows.
    frags = sorted((bucket / "s1" / "fragments").glob("*.csv"))
    assert len(frags) == 2
    sums: dict[str, list[int]] = {}
    for f in frags:
        for row in fragment_rows(f):
            acc = sums.setdefault(row.strong_id, [0, 0])
            acc[0] += row.shots
            acc[1] += row.errors
    stats = sinter.read_stats_from_csv_files(str(merged))
    assert {s.strong_id: [s.shots, s.errors] for s in stats} == sums
    for s in stats:
        assert s.shots >= 20_000 or s.errors >= 100

    # Strong ids equal those of a plain `sinter collect --metadata_func auto` on the same files.
    plain = tmp_path / "plain.csv"
    subprocess.run([str(pathlib.Path(sys.executable).with_name("sinter")), "collect", "--circuits",
                    *map(str, sorted(small_circuits.glob("*.stim"))), "--decoders", "pymatching",
                    "--max_shots", "200", "--max_errors", "10", "--processes", "1",
                    "--metadata_func", "auto", "--save_resume_filepath", str(plain), "--quiet"],
                   check=True)
    plain_ids = {s.strong_id for s in sinter.read_stats_from_csv_files(str(plain))}
    assert plain_ids == {s.strong_id for s in stats}

    # Relaunching the same command launches nothing; merging again gives the same bytes.
    r = kiln("launch", str(small_circuits), "--max-shots", "20_000", "--max-errors", "100",
             "--bucket", str(bucket), "--name", "s1", "--jobs", "2", check=True)
    assert "nothing to launch" in r.stderr
    again = tmp_path / "again.csv"
    kiln("merge", "--bucket", str(bucket), "--out", str(again), check=True)
    assert again.read_bytes() == merged.read_bytes()
    r = kiln("status", "--bucket", str(bucket), "--json", check=True)
    assert '"fraction_done": 1.0' in r.stdout


@pytest.mark.slow
def test_run_batch_sigkilled_and_restarted_loses_nothing_and_counts_nothing_twice(tmp_path, bucket_env,
                                                                                  kiln):
    """A node's run-batch SIGKILLed mid-run and run again, with its bucket on each kind of store
    (a local folder, moto's S3, the GCS emulator): the fragment only ever grew, every task ends at
    exactly its target, and no process of either run is left."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.001, 0.003))
    max_shots = 300_000
    # A dry run uploads nothing; the plan is then uploaded and run by hand below, as a node would.
    r = kiln("launch", str(circuits), "--max-shots", str(max_shots), "--max-errors", "1000000",
             "--bucket", bucket_env.url, "--name", "kill", "--jobs", "1", "--dry-run", check=True)
    assert "nothing was uploaded" in r.stdout
    bucket = open_bucket(bucket_env.url)
    assert bucket.list_keys("kill/") == []
    make_sweep(circuits, bucket_env.url, "kill", max_shots=max_shots, max_errors=10**6, jobs=1)
    key = fragment_key("kill", "b000")
    argv = [sys.executable, "-m", "qec_kiln", "run-batch", "--bucket", bucket_env.url,
            "--sweep", "kill", "--batch", "b000", "--processes", "1", "--sync-seconds", "0.3"]
    tag = f"kill-{os.getpid()}-{time.monotonic_ns()}"  # every process of this test carries it
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL,
                            env=tagged_env(tag))
    before_kill = wait_for_uploaded_rows(bucket, key, 3, timeout=90)
    assert len(fragment_rows(before_kill)) >= 3, "no progress before the kill"
    os.killpg(proc.pid, signal.SIGKILL)  # the node dies: run-batch and its whole session
    proc.wait()
    killed_snapshot = bucket.read_bytes(key)

    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=tagged_env(tag))
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stderr
    final = bucket.read_bytes(key)
    # Only ever extended: what the bucket held at the kill is a prefix of the final fragment.
    assert final.startswith(killed_snapshot) and final.startswith(before_kill)
    totals = shots_per_task(final)
    assert len(totals) == 2
    for sid, shots in totals.items():
        assert shots == max_shots, (sid, shots)  # reached, and not one shot counted twice
    assert sorted(totals.values()) == [max_shots, max_shots]
    # No process of either run (the killed run-batch's sinter and its workers included) is left.
    assert wait_no_tagged_processes(tag) == []


@pytest.mark.slow
def test_merge_drops_a_truncated_last_line(tmp_path, small_circuits, kiln):
    bucket_dir = tmp_path / "bucket"
    kiln("launch", str(small_circuits), "--max-shots", "2000", "--max-errors", "100",
         "--bucket", str(bucket_dir), "--name", "t", "--jobs", "1", check=True)
    frag = bucket_dir / "t" / "fragments" / "b000.csv"
    whole = frag.read_bytes()
    frag.write_bytes(whole + b"    1234,     5,     0,   0.1,pymatching,abc")  # cut mid-row
    out = tmp_path / "m.csv"
    r = kiln("merge", "--bucket", str(bucket_dir), "--out", str(out), check=True)
    assert "dropped a truncated last line" in r.stderr
    merged_shots = sum(s.shots for s in sinter.read_stats_from_csv_files(str(out)))
    assert merged_shots == sum(row.shots for row in fragment_rows(whole))


@pytest.mark.slow
def test_original_commands_work_verbatim(tmp_path):
    work = tmp_path / "w"
    write_surface_circuits(work / "circuits", distances=(3, 5), noises=(0.001, 0.01))
    launch = str(REPO / "scripts" / "launch.sh")
    r = subprocess.run([launch, "circuits/", "--dry-run"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "dry run" in r.stdout and "run-batch" in r.stdout
    assert not (work / "kiln-results").exists() or not any((work / "kiln-results").rglob("*.json"))
    r = subprocess.run([launch, "circuits/", "--decoders", "pymatching", "--max-shots", "1_000_000",
                        "--max-errors", "1000", "--circuits-per-job", "6"], cwd=work,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "merge.py"), "--bucket",
                        "kiln-results", "--out", "merged.csv"], cwd=work, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    stats = sinter.read_stats_from_csv_files(str(work / "merged.csv"))
    assert len(stats) == 4
    assert all(s.shots >= 1_000_000 or s.errors >= 1000 for s in stats)
    r = subprocess.run([str(pathlib.Path(sys.executable).with_name("sinter")), "plot", "--in",
                        "merged.csv", "--x_func", "m.p", "--group_func", "f'd={m.d}'",
                        "--out", "threshold.png"], cwd=work, capture_output=True, text=True,
                       env=dict(os.environ, MPLBACKEND="Agg"))
    assert r.returncode == 0, r.stderr
    assert (work / "threshold.png").stat().st_size > 10_000
    # Underscore spellings (sinter style) are accepted too.
    r = run_kiln("plan", "circuits/", "--max_shots", "1_000", "--max_errors", "10",
                 "--circuits_per_job", "2", cwd=work)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(work / "kiln-results")


@pytest.mark.slow
def test_sharded_sweep_merges_into_one_row_equal_to_the_sum_of_its_shards(tmp_path, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001, 0.003, 0.005))
    write_surface_circuits(circuits, distances=(9,), noises=(0.003,))  # far the most expensive
    bucket = tmp_path / "bucket"
    r = kiln("launch", str(circuits), "--max-shots", "600_000", "--max-errors", "1_000_000",
             "--bucket", str(bucket), "--name", "shards", "--jobs", "3", "--processes", "1",
             "--workers", "2", "--json", check=True)  # two at once: shards are worth it
    manifest = load_manifest(open_bucket(str(bucket)), "shards")
    big = [s for b in manifest.batches for s in b.shards if s.circuit.startswith("d=9")]
    assert len(big) >= 2, r.stdout  # the d=9 task was split over several batches
    assert sum(s.max_shots for s in big) == 600_000
    sid = big[0].strong_id
    per_fragment = []
    for frag in sorted((bucket / "shards" / "fragments").glob("*.csv")):
        rows = [row for row in fragment_rows(frag) if row.strong_id == sid]
        if rows:
            per_fragment.append(sum(row.shots for row in rows))
    assert len(per_fragment) == len(big)
    merged = tmp_path / "merged.csv"
    kiln("merge", "--bucket", str(bucket), "--out", str(merged), check=True)
    lines = [line for line in merged.read_text().splitlines() if sid in line]
    assert len(lines) == 1  # one row, in the same format as any unsharded row
    [row] = [s for s in sinter.read_stats_from_csv_files(str(merged)) if s.strong_id == sid]
    assert row.shots == sum(per_fragment) == 600_000
    assert row.json_metadata == {"b": "X", "d": 9, "p": 0.003, "type": "rotated_surface_memory"}


@pytest.mark.slow
def test_one_worker_runs_its_whole_queue_in_one_sinter_with_exact_fragments(tmp_path, kiln):
    """One local worker, three batches: one run-batch (--all) and one sinter for all of them,
    no task split into shards; each batch's fragment holds exactly its own tasks, at their
    targets, and the merge has every task once."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001, 0.003, 0.005))
    bucket = tmp_path / "bucket"
    r = kiln("launch", str(circuits), "--max-shots", "3000", "--max-errors", "1_000_000",
             "--bucket", str(bucket), "--name", "one", "--jobs", "3", check=True)
    assert "all 3 batch(es) finished" in r.stderr
    manifest = load_manifest(open_bucket(str(bucket)), "one")
    assert len(manifest.batches) == 3
    assert all(s.count == 1 for b in manifest.batches for s in b.shards)
    for b in manifest.batches:
        rows = fragment_rows(bucket / "one" / "fragments" / f"{b.id}.csv")
        assert {row.strong_id for row in rows} == b.strong_ids
        assert sum(row.shots for row in rows) == 3000 * len(b.shards)
    for b in manifest.batches:  # one run-batch's log, uploaded for each of its batches
        log = (bucket / "one" / "logs" / f"{b.id}.log").read_text()
        assert log.count("sinter collect:") == 1 and "b000,b001,b002: batches finished" in log, log
    r = kiln("status", "--bucket", str(bucket), "--json", check=True)
    assert '"fraction_done": 1.0' in r.stdout


@pytest.mark.slow
def test_a_whole_queue_sigkilled_and_resumed_in_other_groupings_is_exact(tmp_path):
    """run-batch --all of three batches (one sinter, one resume file) is SIGKILLed mid-run;
    one batch is then resumed alone and the rest with --all again: every fragment only grew,
    holds only its own batch's rows, and every task ends at exactly its target."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.001, 0.003, 0.005))
    max_shots = 200_000
    manifest = make_sweep(circuits, tmp_path / "bucket", "q", max_shots=max_shots,
                          max_errors=10**6, jobs=3)
    ids = [b.id for b in manifest.batches]
    assert len(ids) == 3 and all(len(b.shards) == 1 for b in manifest.batches)
    frags = {b: tmp_path / "bucket" / fragment_key("q", b) for b in ids}
    base = [sys.executable, "-m", "qec_kiln", "run-batch", "--bucket", str(tmp_path / "bucket"),
            "--sweep", "q", "--processes", "1", "--sync-seconds", "0.3"]
    every = base + ["--batches", ",".join(ids), "--all"]
    tag = f"queue-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen(every, start_new_session=True, stderr=subprocess.DEVNULL,
                            env=tagged_env(tag))
    uploaded = lambda: sum(len(fragment_rows(f)) for f in frags.values() if f.exists())  # noqa: E731
    wait_until(lambda: uploaded() >= 4, 60, "4 rows uploaded", fail=False)
    assert uploaded() >= 4, "no progress before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = {b: f.read_bytes() if f.exists() else b"" for b, f in frags.items()}

    r = subprocess.run(base + ["--batch", ids[1]], capture_output=True, text=True, timeout=120,
                       env=tagged_env(tag))
    assert r.returncode == 0, r.stderr
    r = subprocess.run(every, capture_output=True, text=True, timeout=120, env=tagged_env(tag))
    assert r.returncode == 0, r.stderr
    for b in manifest.batches:
        final = frags[b.id].read_bytes()
        assert final.startswith(killed[b.id])  # only ever extended
        assert shots_per_task(final) == dict.fromkeys(b.strong_ids, max_shots)
    assert wait_no_tagged_processes(tag) == []

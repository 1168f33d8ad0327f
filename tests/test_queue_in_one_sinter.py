"""One worker's queue in one sinter: run-batch --all (several batches, one sinter, one resume
file) keeps each fragment its own batch's, parses the shared resume file once, reports each batch
as it ended, and stands one batch down without stopping the others.

Real sinter, small circuits."""

from __future__ import annotations

import fcntl
import os
import sys

import pytest
import sinter
from kiln_helpers import fragment_rows, make_sweep, shots_per_task, wait_until, write_surface_circuits

from qec_kiln._backends.local.state import StateFolder
from qec_kiln._node.runner import run_batch
from qec_kiln._report import progress as progress_mod
from qec_kiln._report.progress import ResumeReader
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.fragments import HEADER_LINE
from qec_kiln._sweep.manifest import fragment_key, load_manifest


def _sweep(tmp_path, name="t", max_shots=2000):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001, 0.003))
    manifest = make_sweep(circuits, tmp_path / "bucket", name, max_shots=max_shots,
                          max_errors=10**6, jobs=2)
    bucket = open_bucket(str(tmp_path / "bucket"))
    assert len(manifest.batches) == 2 and all(len(b.shards) == 1 for b in manifest.batches)
    return bucket, manifest


def test_rows_of_tasks_outside_the_batch_are_kept_in_its_fragment_by_run_batch_all(tmp_path):
    """A fragment holding a row of a task that is not its batch's (a hand-merged copy, a row
    of an earlier plan) keeps it when its batch runs with others (--all), as it does when the
    batch runs alone: the fragment only ever grows by extension, never loses a row."""
    bucket, manifest = _sweep(tmp_path)
    b0, b1 = manifest.batches
    stray = sinter.TaskStats(strong_id="f" * 64, decoder="pymatching", json_metadata={"x": 1},
                             shots=123, errors=1, seconds=0.5).to_csv_line()
    key = fragment_key("t", b0.id)
    before = HEADER_LINE + (stray + "\n").encode()
    bucket.write_bytes(key, before)
    out: list[str] = []
    code = run_batch(str(tmp_path / "bucket"), "t", [b0.id, b1.id], processes=1,
                     sync_seconds=0.5, work_dir=tmp_path / "w", out=out.append)
    assert code == 0, "\n".join(out)
    after = bucket.read_bytes(key)
    assert after.startswith(before), "the stray row was dropped from the fragment"
    assert {r.strong_id for r in fragment_rows(after)} == b0.strong_ids | {"f" * 64}
    assert sum(r.shots for r in fragment_rows(after) if r.strong_id in b0.strong_ids) == 2000


def test_a_row_of_another_batch_of_the_group_in_a_fragment_is_refused(tmp_path):
    """A fragment holding rows of another batch run in the same sinter would have them
    counted toward that batch's target and uploaded twice: refused, the bucket unchanged."""
    from qec_kiln._errors import KilnError

    bucket, manifest = _sweep(tmp_path)
    b0, b1 = manifest.batches
    [sid1] = b1.strong_ids
    row = sinter.TaskStats(strong_id=sid1, decoder="pymatching", json_metadata={"x": 1},
                           shots=100, errors=1, seconds=0.5).to_csv_line()
    key = fragment_key("t", b0.id)
    bucket.write_bytes(key, HEADER_LINE + (row + "\n").encode())
    with pytest.raises(KilnError, match=b1.id):
        run_batch(str(tmp_path / "bucket"), "t", [b0.id, b1.id], processes=1,
                  sync_seconds=0.5, work_dir=tmp_path / "w", out=lambda s: None)
    assert bucket.read_bytes(key) == HEADER_LINE + (row + "\n").encode()
    assert not bucket.exists(fragment_key("t", b1.id))


def test_live_progress_parses_a_shared_resume_file_once_per_change(tmp_path, monkeypatch):
    """The batches of one run-batch --all share one resume file (the others' resume.csv are
    links to it): the launch's live view parses it once per change, not once per batch (with
    thousands of batches that was minutes of the launcher's CPU per refresh, beside sinter)."""
    bucket, manifest = _sweep(tmp_path)
    ids = [b.id for b in manifest.batches]
    work = tmp_path / "w"
    assert run_batch(str(tmp_path / "bucket"), "t", ids, processes=1, sync_seconds=0.5,
                     work_dir=work, out=lambda s: None) == 0
    assert (work / "t" / ids[1] / "resume.csv").is_symlink()
    calls = []
    real = progress_mod.parse_fragment
    monkeypatch.setattr(progress_mod, "parse_fragment",
                        lambda data, name: calls.append(name) or real(data, name))
    reader = ResumeReader(load_manifest(bucket, "t"), lambda b: work / "t" / b / "resume.csv")
    shots = [sum(s.shots for s in reader.batch(b).shards) for b in ids]
    assert shots == [2000, 2000]
    assert len(calls) == 1, calls


@pytest.mark.slow
def test_one_worker_reports_each_batch_of_its_queue_as_it_ended(tmp_path, kiln):
    """One local worker's queue is one run-batch --all; a batch of it held by another runner
    on this machine (its work folder locked) is that batch's 'elsewhere', while the others
    finish: the launch says so, not '0 batch(es) finished; 2 run by another launch'."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001, 0.003))
    url = str(tmp_path / "bucket")
    r = kiln("plan", str(circuits), "--max-shots", "2000", "--max-errors", "1_000_000",
             "--bucket", url, "--name", "one", "--jobs", "2", check=True)
    state = StateFolder.of(url, "one")
    held = state.work_dir("b001")
    held.mkdir(parents=True)
    fd = os.open(held / "run-batch.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run-batch of b001 runs on this machine
    try:
        r = kiln("launch", str(circuits), "--max-shots", "2000", "--max-errors", "1_000_000",
                 "--bucket", url, "--name", "one", "--jobs", "2")
    finally:
        os.close(fd)
    print(r.stderr, file=sys.stderr)
    assert "1 batch(es) finished; 1 run by another launch of this sweep (b001)" in r.stderr


@pytest.mark.slow
def test_a_batch_taken_over_mid_run_leaves_the_others_of_its_sinter_running(tmp_path):
    """run-batch --all of two batches; another writer replaces b001's fragment mid-run (a
    second runner of that batch): b001 stands down (its fragment is left as the other wrote
    it, exit 3 in its own record) while b000 runs on to exactly its target (exit 0)."""
    import subprocess

    from qec_kiln._node.runner import BATCH_EXIT

    bucket, manifest = _sweep(tmp_path, name="co", max_shots=2_000_000)
    b0, b1 = manifest.batches
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "qec_kiln", "run-batch", "--bucket", str(tmp_path / "bucket"),
            "--sweep", "co", "--batches", f"{b0.id},{b1.id}", "--all", "--processes", "1",
            "--sync-seconds", "0.3", "--work-dir", str(work)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    frag1 = tmp_path / "bucket" / fragment_key("co", b1.id)
    wait_until(lambda: frag1.exists() and len(fragment_rows(frag1)) >= 1, 60, "b001 uploads")
    theirs = HEADER_LINE  # what the other runner of b001 wrote
    bucket.write_bytes(fragment_key("co", b1.id), theirs)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err  # the process: one batch was another's
    assert (work / "co" / b0.id / BATCH_EXIT).read_text().strip() == "0", err
    assert (work / "co" / b1.id / BATCH_EXIT).read_text().strip() == "3", err
    assert frag1.read_bytes() == theirs  # never overwritten after it stood down
    done = (tmp_path / "bucket" / fragment_key("co", b0.id)).read_bytes()
    assert shots_per_task(done) == dict.fromkeys(b0.strong_ids, 2_000_000), err
    assert "the others are another run-batch's" in err, err

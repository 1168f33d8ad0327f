"""Top up, extend and import: a launch counts what the bucket (and --existing-data) already holds
of its tasks, as `sinter collect` counts its resume file, and plans only what is left."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading
import time

import pytest
import sinter
import stim

import qec_kiln
from qec_kiln._errors import KilnError
from qec_kiln._planning._cost import TaskCost
from qec_kiln._planning.plan import make_plan
from qec_kiln._prepare import Fleet, prepare_sweep
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.lease import PLAN_LOCK_KEY, live_holder, plan_lock

SINTER = str(pathlib.Path(sys.executable).with_name("sinter"))
ONE = {"processes": 1}


def write_repetition(folder: pathlib.Path, distances=(3, 5), p=0.05) -> list[pathlib.Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for d in distances:
        c = stim.Circuit.generated("repetition_code:memory", distance=d, rounds=d,
                                   after_clifford_depolarization=p)
        path = folder / f"d={d},p={p}.stim"
        path.write_text(str(c))
        out.append(path)
    return out


def plain_sinter(files, resume: pathlib.Path, *, max_shots: int, max_errors: int) -> None:
    subprocess.run([SINTER, "collect", "--circuits", *map(str, files), "--decoders", "pymatching",
                    "--max_shots", str(max_shots), "--max_errors", str(max_errors),
                    "--processes", "1", "--metadata_func", "auto",
                    "--save_resume_filepath", str(resume), "--quiet"], check=True)


def per_task(csv: pathlib.Path) -> dict[str, sinter.TaskStats]:
    return {s.strong_id: s for s in sinter.read_stats_from_csv_files(str(csv))}


def fragment_totals(bucket: pathlib.Path) -> dict[str, int]:
    """Shots per strong_id over every fragment of every sweep in a directory bucket."""
    totals: dict[str, int] = {}
    for f in sorted(bucket.glob("*/fragments/*.csv")):
        for s in sinter.read_stats_from_csv_files(str(f)):
            totals[s.strong_id] = totals.get(s.strong_id, 0) + s.shots
    return totals


def launch(circuits, bucket, **settings):
    return qec_kiln.launch(circuits, bucket=str(bucket), backend_options=ONE, log=lambda s: None,
                           **settings)


@pytest.mark.slow
def test_raising_max_errors_tops_up_to_what_one_sinter_resume_run_reaches(tmp_path):
    files = write_repetition(tmp_path / "c", p=0.05)
    bucket, merged = tmp_path / "bucket", tmp_path / "merged.csv"
    for errors in (20, 200):
        r = launch(tmp_path / "c", bucket, max_shots=100_000, max_errors=errors)
        assert not r.failed
    second = r.plan.manifest
    assert set(second.existing) == {t["strong_id"] for t in second.tasks}  # counted the first
    for b in second.batches:
        for s in b.shards:  # planned only what was left
            had = second.existing[s.strong_id]
            assert s.max_errors <= 200 - had["errors"] and s.max_shots <= 100_000 - had["shots"]
    report = qec_kiln.merge(str(bucket), str(merged))
    kiln = per_task(merged)
    assert report.reached == report.total
    assert {sid: s.shots for sid, s in kiln.items()} == fragment_totals(bucket)  # no double count
    for s in kiln.values():
        assert s.shots <= 100_000 and (s.errors >= 200 or s.shots == 100_000)

    resume = tmp_path / "plain.csv"  # the same two steps with plain sinter and one resume file
    for errors in (20, 200):
        plain_sinter(files, resume, max_shots=100_000, max_errors=errors)
    plain = per_task(resume)
    assert set(plain) == set(kiln)
    kiln_shots, plain_shots = sum(s.shots for s in kiln.values()), sum(s.shots for s in plain.values())
    print(f"top-up errors 20 -> 200: kiln {kiln_shots:,} shots, plain sinter resume run "
          f"{plain_shots:,} shots (ratio {kiln_shots / plain_shots:.3f})")
    assert abs(kiln_shots / plain_shots - 1) < 0.35  # about 5 sigma of 200 errors per task


@pytest.mark.slow
def test_raising_max_shots_tops_up_to_exactly_max_shots(tmp_path):
    files = write_repetition(tmp_path / "c", p=0.005)  # p_L ~ 1e-4: max_shots binds
    bucket, merged = tmp_path / "bucket", tmp_path / "merged.csv"
    for shots in (20_000, 200_000):
        assert not launch(tmp_path / "c", bucket, max_shots=shots, max_errors=10**6).failed
    qec_kiln.merge(str(bucket), str(merged))
    kiln = per_task(merged)
    resume = tmp_path / "plain.csv"
    for shots in (20_000, 200_000):
        plain_sinter(files, resume, max_shots=shots, max_errors=10**6)
    plain = per_task(resume)
    print(f"top-up shots 20k -> 200k: kiln {sum(s.shots for s in kiln.values()):,} shots, plain "
          f"sinter resume run {sum(s.shots for s in plain.values()):,} shots")
    assert {k: s.shots for k, s in kiln.items()} == {k: s.shots for k, s in plain.items()} \
        == {k: 200_000 for k in plain}
    assert fragment_totals(bucket) == {k: 200_000 for k in plain}
    # Asking again, or for less, samples nothing: the rows already reach the targets.
    r = launch(tmp_path / "c", bucket, max_shots=100_000, max_errors=10**6)
    assert r.launched == [] and r.plan.batches == []


@pytest.mark.slow
def test_adding_circuits_samples_only_the_new_ones(tmp_path):
    write_repetition(tmp_path / "c", distances=(3,))
    bucket = tmp_path / "bucket"
    launch(tmp_path / "c", bucket, max_shots=5_000, max_errors=50, name="weekly")
    before = fragment_totals(bucket)
    write_repetition(tmp_path / "c", distances=(5,))
    r = launch(tmp_path / "c", bucket, max_shots=5_000, max_errors=50, name="weekly")
    assert r.sweep.startswith("weekly-")  # the name's sweep has other circuits: a top-up of it
    planned = {s.circuit for b in r.plan.batches for s in b.shards}
    assert planned == {"d=5,p=0.05.stim"}
    qec_kiln.merge(str(bucket), str(tmp_path / "merged.csv"))
    after = {s.strong_id: s.shots for s in sinter.read_stats_from_csv_files(
        str(tmp_path / "merged.csv"))}
    assert len(after) == 2
    assert {k: after[k] for k in before} == before  # the old task's shots are unchanged


@pytest.mark.slow
def test_existing_csv_counts_and_is_merged_once(tmp_path):
    files = write_repetition(tmp_path / "c")
    workstation = tmp_path / "workstation.csv"
    plain_sinter(files[:1], workstation, max_shots=5_000, max_errors=50)  # d=3 only
    (row,) = sinter.read_stats_from_csv_files(str(workstation))
    bucket, merged = tmp_path / "bucket", tmp_path / "merged.csv"
    settings = dict(max_shots=5_000, max_errors=50, existing_data=[workstation],
                    merge_existing_data=True)
    r = launch(tmp_path / "c", bucket, **settings)
    assert {s.circuit for b in r.plan.batches for s in b.shards} == {"d=5,p=0.05.stim"}
    assert launch(tmp_path / "c", bucket, **settings).launched == []  # again: nothing, no import
    assert len(list(bucket.glob("import-*/manifest.json"))) == 1
    report = qec_kiln.merge(str(bucket), str(merged))
    out = per_task(merged)
    assert len(out) == 2 and out[row.strong_id].shots == row.shots  # the imported row, once
    assert out[row.strong_id].errors == row.errors
    assert report.reached == report.total == 2  # the import has no targets of its own

    # Counted only (no --merge-existing-data): the merge says the rows are outside the bucket.
    other = tmp_path / "other"
    launch(tmp_path / "c", other, max_shots=5_000, max_errors=50, existing_data=[workstation])
    report = qec_kiln.merge(str(other), str(tmp_path / "m2.csv"))
    assert row.strong_id not in per_task(tmp_path / "m2.csv")
    assert any("not in the bucket" in w and str(workstation) in w for w in report.warnings)


# --- fast: refusals and the plan ------------------------------------------------------------


def prepare(circuits, bucket, *, commit=False, log=None, **settings):
    return prepare_sweep(str(circuits), Fleet.build(settings), open_bucket(str(bucket)),
                         log or (lambda s: None), commit=commit)


def test_unfinished_sweep_of_the_same_tasks_refuses_a_top_up(tmp_path):
    write_repetition(tmp_path / "c")
    first = prepare(tmp_path / "c", tmp_path / "b", commit=True, max_errors=20, name="first")
    assert not first.exists  # planned and uploaded now, never run: its work is unfinished
    assert (tmp_path / "b" / "first" / "manifest.json").is_file()
    with pytest.raises(KilnError, match=r"sweep 'first' .*still has work on 2 .*finish it first"):
        prepare(tmp_path / "c", tmp_path / "b", commit=True, max_errors=200)
    lines: list[str] = []
    shown = prepare(tmp_path / "c", tmp_path / "b", max_errors=200, log=lines.append)  # dry run
    assert shown.batches and any("a launch now would be refused" in ln for ln in lines)
    # --name reuse with other targets: a new sweep NAME-<hash>, refused the same way.
    with pytest.raises(KilnError, match="finish it first"):
        prepare(tmp_path / "c", tmp_path / "b", commit=True, max_errors=200, name="first")
    assert prepare(tmp_path / "c", tmp_path / "b", max_errors=200, name="first").sweep \
        .startswith("first-")


@pytest.mark.slow  # samples with sinter: ~1.5 s
def test_fresh_is_refused_where_the_bucket_holds_rows(tmp_path):
    files = write_repetition(tmp_path / "c")
    bucket = tmp_path / "b"
    (bucket / "old" / "fragments").mkdir(parents=True)
    old = prepare(tmp_path / "c", bucket, commit=True, max_shots=100, max_errors=10**6, name="old")
    plain_sinter(files, bucket / "old" / "fragments" / "b000.csv", max_shots=100,
                 max_errors=10**6)  # as if its batch had run
    assert len(old.batches) == 1
    with pytest.raises(KilnError, match="--fresh: .* already holds rows of 2 .*new --bucket"):
        prepare(tmp_path / "c", bucket, commit=True, max_shots=1000, fresh=True)
    fresh = prepare(tmp_path / "c", tmp_path / "new", commit=True, max_shots=1000, fresh=True)
    assert not fresh.exists and not fresh.manifest.existing
    assert (tmp_path / "new" / fresh.sweep / "manifest.json").is_file()
    top = prepare(tmp_path / "c", bucket, max_shots=1000, max_errors=10**6)
    assert {r["left_shots"] for r in top.task_rows()} == {900}
    assert top.to_json()["tasks"][0]["existing_from"] == {"old": 100}


def test_existing_data_refusals_are_one_line(tmp_path):
    write_repetition(tmp_path / "c")
    bad = tmp_path / "bad.csv"
    bad.write_text(sinter.CSV_HEADER + "\n12,3,x\n")
    with pytest.raises(KilnError, match=r"--existing-data .*bad.csv: not a readable sinter CSV"):
        prepare(tmp_path / "c", tmp_path / "b", existing_data=[bad])
    other = tmp_path / "other.csv"
    stats = sinter.TaskStats(strong_id="f" * 64, decoder="pymatching", json_metadata={"d": 9},
                             shots=10, errors=1)
    other.write_text(sinter.CSV_HEADER + "\n" + stats.to_csv_line() + "\n")
    with pytest.raises(KilnError, match=r"other.csv: none of its 1 row\(s\) is of a task"):
        prepare(tmp_path / "c", tmp_path / "b", existing_data=[other])
    with pytest.raises(KilnError, match="cannot read it"):
        prepare(tmp_path / "c", tmp_path / "b", existing_data=[tmp_path / "missing.csv"])
    with pytest.raises(KilnError, match="--existing-data"):
        prepare(tmp_path / "c", tmp_path / "b", sinter_options=["--existing_data_filepaths=x.csv"])


def test_shards_split_what_is_left():
    tasks = [TaskCost("a.stim", "pymatching", "a", 1e-4, 1e-3)]
    plan = make_plan(tasks, max_shots=10**6, max_errors=1000, jobs=3, goals={"a": (700_001, 250)})
    shards = [s for b in plan.batches for s in b.shards]
    assert len(shards) == 3
    assert sum(s.max_shots for s in shards) == 700_001 and sum(s.max_errors for s in shards) == 250


def test_a_launch_waits_for_the_planning_lock(tmp_path):
    write_repetition(tmp_path / "c")
    bucket = open_bucket(str(tmp_path / "b"))
    lines: list[str] = []
    done: list[object] = []
    with plan_lock(bucket, lines.append):
        t = threading.Thread(target=lambda: done.append(
            prepare(tmp_path / "c", tmp_path / "b", commit=True, log=lines.append)))
        t.start()
        deadline = time.time() + 60
        while not any("waiting for another launch" in ln for ln in lines) and time.time() < deadline:
            time.sleep(0.05)
        assert not done and any("waiting for another launch" in ln for ln in lines)
    t.join(60)
    assert done and not done[0].exists  # type: ignore[union-attr]  # it created the sweep
    assert bucket.exists(f"{done[0].sweep}/manifest.json")  # type: ignore[union-attr]
    assert live_holder(bucket, PLAN_LOCK_KEY) is None  # released: free for the next launch


@pytest.mark.slow  # sleeps through leases: ~2.5 s
def test_the_planning_lock_is_renewed_while_held_and_a_lost_one_refuses_the_commit(tmp_path):
    """Held past its lease (a long count or upload), the lock is renewed, so no other launch
    takes it; one lost anyway (renewals stopped, then taken over) refuses the commit, and its
    release leaves the new holder's lock alone (compare-and-swap, never a blind delete)."""
    from qec_kiln._sweep.lease import LeaseHeld, acquire

    bucket = open_bucket(str(tmp_path / "b"))
    with plan_lock(bucket, print, seconds=0.6) as lock:
        time.sleep(1.5)  # over two leases
        with pytest.raises(LeaseHeld):
            acquire(bucket, PLAN_LOCK_KEY, seconds=60, watch=False)
        lock.check()
    assert live_holder(bucket, PLAN_LOCK_KEY) is None
    with plan_lock(bucket, print, seconds=0.6) as lock:
        lock._stop.set()  # as if the bucket refused every renewal
        lock._thread.join()
        time.sleep(0.8)
        other = acquire(bucket, PLAN_LOCK_KEY, seconds=60, watch=False)  # took the expired lock
        with pytest.raises(KilnError, match="lost the bucket's planning lock"):
            lock.check()
    assert live_holder(bucket, PLAN_LOCK_KEY) is not None  # the other launch still holds it
    assert other.version == bucket.read_versioned(PLAN_LOCK_KEY)[1]


def test_a_custom_error_count_key_is_what_a_top_up_counts_toward_max_errors():
    """With --custom-error-count-key, sinter counts that custom count toward max_errors in a
    resume file; a top-up's remaining errors (and what its manifest records) do the same."""
    import collections

    from qec_kiln._sweep.existing import ExistingRows, remaining_targets

    rows = ExistingRows()
    rows.add("sweep a", sinter.TaskStats(
        strong_id="x", decoder="pymatching", json_metadata={}, shots=1000, errors=90,
        custom_counts=collections.Counter({"flagged": 30})))
    assert remaining_targets(["x"], 10_000, 100, rows) == {"x": (9000, 10)}
    assert remaining_targets(["x"], 10_000, 100, rows, "flagged") == {"x": (9000, 70)}
    assert rows.to_manifest("flagged")["x"]["errors"] == 30
    assert rows.to_manifest()["x"]["errors"] == 90


def test_a_sweep_stopped_by_its_custom_error_count_is_settled_for_a_top_up(tmp_path):
    """Another sweep with --custom-error-count-key whose rows reached max_errors by that custom
    count (as sinter stops it) is finished: a top-up counts its rows instead of refusing
    ("still has work") as plain errors would judge it."""
    import collections

    from qec_kiln._sweep.holdings import bucket_holdings
    from qec_kiln._sweep.manifest import fragment_key

    write_repetition(tmp_path / "c")
    first = prepare(tmp_path / "c", tmp_path / "b", commit=True, max_shots=10**6, max_errors=100,
                    name="first", custom_error_count_key="detection_events",
                    sinter_options=["--count_detection_events"])
    bucket = open_bucket(str(tmp_path / "b"))
    assert len(first.batches) == 1
    shards = first.batches[0].shards
    rows = [sinter.TaskStats(strong_id=s.strong_id, decoder=s.decoder, json_metadata={},
                             shots=5000, errors=3,
                             custom_counts=collections.Counter({"detection_events": 500}))
            for s in shards]
    bucket.write_if(fragment_key("first", first.batches[0].id),
                    (sinter.CSV_HEADER + "\n" + "".join(r.to_csv_line() + "\n" for r in rows))
                    .encode(), None)
    held, unsettled = bucket_holdings(bucket, {s.strong_id for s in shards}, exclude="new")
    assert unsettled == []  # done by its custom count, though only 3 logical errors each
    assert {sid: st.shots for sid, st in held.stats.items()} == {s.strong_id: 5000 for s in shards}

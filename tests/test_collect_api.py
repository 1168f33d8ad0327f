"""Issue 29: `qec_kiln.collect` / `qec_kiln.iter_collect` take every keyword of sinter 1.16's
`sinter.collect` / `sinter.iter_collect` with sinter's meaning, on the local backend (real
sinter, stim and pymatching on tiny circuits); what a remote node cannot honour is refused by
name before anything is uploaded."""

from __future__ import annotations

import inspect
import json

import pytest
import sinter
from kiln_helpers import repetition_circuit, sinter_strong_id

import qec_kiln
from qec_kiln._errors import KilnError


def _shots(progress: list[sinter.Progress]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in progress:
        for st in p.new_stats:
            out[st.strong_id] = out.get(st.strong_id, 0) + st.shots
    return out


@pytest.mark.parametrize("ours, theirs", [(qec_kiln.collect, sinter.collect),
                                          (qec_kiln.iter_collect, sinter.iter_collect)])
def test_every_sinter_keyword_is_taken(ours, theirs):
    mine = inspect.signature(ours).parameters
    missing = [name for name, p in inspect.signature(theirs).parameters.items()
               if name not in mine or mine[name].kind is inspect.Parameter.POSITIONAL_ONLY]
    assert not missing, f"{ours.__name__} lacks sinter's keyword(s) {missing}"


def test_bad_keywords_are_refused_by_name_before_anything_is_written(tmp_path):
    bucket = tmp_path / "b"
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    with pytest.raises(ValueError, match="neither max_shots nor max_errors"):
        qec_kiln.collect(num_workers=1, tasks=[task], bucket=str(bucket))
    with pytest.raises(ValueError, match="save_resume_filepath in existing_data_filepaths"):
        qec_kiln.collect(num_workers=1, tasks=[task], max_shots=10, bucket=str(bucket),
                         save_resume_filepath=tmp_path / "r.csv",
                         existing_data_filepaths=[tmp_path / "r.csv"])
    with pytest.raises(KilnError, match="allowed_cpu_affinity_ids"):
        qec_kiln.collect(num_workers=1, tasks=[task], max_shots=10, bucket=str(bucket),
                         backend="slurm", allowed_cpu_affinity_ids=[0])
    odd = sinter.Task(circuit=repetition_circuit(5), json_metadata={"d": 5},
                      collection_options=sinter.CollectionOptions(max_batch_size=2.5))
    with pytest.raises(ValueError, match=r"task 1: max_batch_size=2.5: give a positive integer"):
        qec_kiln.collect(num_workers=1, tasks=[task, odd], max_shots=10, bucket=str(bucket))
    twice = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3},
                        collection_options=sinter.CollectionOptions(max_batch_size=7))
    with pytest.raises(KilnError, match=r"task 1: .* other targets or batch options"):
        qec_kiln.collect(num_workers=1, tasks=[task, twice], max_shots=10, bucket=str(bucket))
    with pytest.raises(ValueError, match="num_workers"):
        qec_kiln.collect(num_workers=0, tasks=[task], max_shots=10, bucket=str(bucket))
    with pytest.raises(KilnError, match="unknown setting 'bakend'"):
        qec_kiln.collect(num_workers=1, tasks=[task], max_shots=10, bucket=str(bucket),
                         bakend="slurm")
    assert not bucket.exists()


def test_sinter_keywords_become_the_sweeps_settings(tmp_path):
    from qec_kiln._collect.call import UNLIMITED, CollectCall

    own = sinter.CollectionOptions(max_shots=50, max_batch_size=64)
    tasks = [sinter.Task(circuit=repetition_circuit(3), json_metadata={"d": 3}, collection_options=own),
             sinter.Task(circuit=repetition_circuit(5), json_metadata=None, decoder="vacuous",
                         collection_options=sinter.CollectionOptions(max_batch_size=64))]
    call = CollectCall.build(tasks, dict(
        num_workers=3, decoders="pymatching", max_shots=100, max_errors=None,
        count_observable_error_combos=True, count_detection_events=True,
        custom_error_count_key="detection_events", allowed_cpu_affinity_ids=[1]),
        {"bucket": str(tmp_path / "b")}, root=tmp_path / "home")
    s = call.settings
    assert s["decoders"] == ["pymatching", "vacuous"] and call.cpu_ids == (1,)
    none = next(n for n in s["task_targets"] if n.startswith("task-"))
    assert s["task_targets"] == {"d=3.stim": {"pymatching": (50, UNLIMITED), "vacuous": (0, 0)},
                                 none: {"pymatching": (0, 0), "vacuous": (100, UNLIMITED)}}
    assert s["sinter_options"] == ["--max_batch_size=64", "--count_observable_error_combos",
                                   "--count_detection_events"]
    assert s["custom_error_count_key"] == "detection_events"
    assert s["backend_options"] == {"processes": 3, "sync_seconds": 1.0}
    remote = CollectCall.build(tasks[:1], dict(num_workers=3, max_shots=100),
                               {"backend": "slurm", "backend_options": {"processes": 8}},
                               root=tmp_path / "home")
    assert remote.settings["backend_options"] == {"processes": 8}  # the user's, per node
    assert remote.settings["task_targets"] is None and remote.settings["max_shots"] == 50


def test_per_task_batch_options_ride_to_sinters_of_their_own(tmp_path):
    """Tasks whose combined batch options differ: each task's record carries them (none go to
    every sinter), and a batch's shards split into one ``sinter collect`` per set of options,
    each with its own flags after the sweep's."""
    import pathlib as pl

    from qec_kiln._collect.call import UNLIMITED, CollectCall
    from qec_kiln._node.sinter_cmd import sinter_collect_argv
    from qec_kiln._sweep.batches import Shard, sinter_runs

    tasks = [sinter.Task(circuit=repetition_circuit(3), json_metadata={"d": 3}, collection_options=
                         sinter.CollectionOptions(max_batch_size=64, max_batch_seconds=9)),
             sinter.Task(circuit=repetition_circuit(5), json_metadata={"d": 5})]
    call = CollectCall.build(tasks, dict(num_workers=1, decoders=["pymatching"], max_shots=100,
                                         max_errors=None, start_batch_size=8,
                                         max_batch_seconds=5),
                             {"bucket": str(tmp_path / "b")}, root=tmp_path / "home")
    s = call.settings
    # combined with the call's as sinter does: the smaller of each
    assert s["task_targets"] == {"d=3.stim": {"pymatching": (100, UNLIMITED, 8, 64, 5)},
                                 "d=5.stim": {"pymatching": (100, UNLIMITED, 8, None, 5)}}
    assert s["sinter_options"] is None
    shards = [Shard(f"d={d}.stim", "pymatching", f"id{d}", 100, UNLIMITED, 1, 1,
                    batch_options=s["task_targets"][f"d={d}.stim"]["pymatching"][2:])
              for d in (3, 5)]
    runs = sinter_runs(shards)
    assert [(r.circuits, r.batch_flags()) for r in runs] == [
        (("d=3.stim",), ["--start_batch_size", "8", "--max_batch_size", "64",
                         "--max_batch_seconds", "5"]),
        (("d=5.stim",), ["--start_batch_size", "8", "--max_batch_seconds", "5"])]
    argv = sinter_collect_argv([pl.Path("/w/d=3.stim")], decoders=["pymatching"], max_shots=100,
                               max_errors=UNLIMITED, processes=1, resume_path=pl.Path("/w/r.csv"),
                               extra=["--count_detection_events", *runs[0].batch_flags()],
                               max_batch_seconds=1)
    assert argv[-7:] == ["--count_detection_events", "--start_batch_size", "8",
                         "--max_batch_size", "64", "--max_batch_seconds", "5"]


def test_a_task_targets_record_with_batch_options_reaches_the_shards(small_circuits, tmp_path):
    """``task_targets`` records of five: the plan's shards carry each task's batch options,
    through the manifest's JSON, and the sweep is another one; with records of two the shards'
    JSON has no ``batch_options`` (a manifest as before)."""
    names = sorted(p.name for p in small_circuits.glob("*.stim"))
    kw = dict(decoders=["pymatching"], max_shots=100, max_errors=10, bucket=str(tmp_path / "b"))
    plain = qec_kiln.plan(small_circuits, **kw).manifest
    two = qec_kiln.plan(small_circuits, **kw, task_targets={
        n: {"pymatching": (100, 10)} for n in names}).manifest
    own = {n: (100, 10, None, 32 * (i + 1), None) for i, n in enumerate(names)}
    five = qec_kiln.plan(small_circuits, **kw, task_targets={
        n: {"pymatching": t} for n, t in own.items()}).manifest
    assert len({plain.sweep, two.sweep, five.sweep}) == 3  # the records enter the digest
    shards = [s for b in five.batches for s in b.shards]
    assert {s.circuit: s.batch_options for s in shards} == {n: t[2:] for n, t in own.items()}
    assert all("batch_options" not in s.to_json() for b in two.batches for s in b.shards)
    from qec_kiln._sweep.manifest import Manifest

    again = Manifest.from_json(json.loads(five.dumps()))
    assert [s.batch_options for b in again.batches for s in b.shards] == \
        [s.batch_options for b in five.batches for s in b.shards]


@pytest.mark.slow
def test_per_task_batch_options_are_honoured_end_to_end(tmp_path):
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.batches import sinter_runs
    from qec_kiln._sweep.manifest import list_sweeps, load_manifest

    tasks = [sinter.Task(circuit=repetition_circuit(3), json_metadata={"d": 3}, collection_options=
                         sinter.CollectionOptions(max_shots=300, max_batch_size=50)),
             sinter.Task(circuit=repetition_circuit(5), json_metadata={"d": 5}, collection_options=
                         sinter.CollectionOptions(start_batch_size=16))]
    seen: list[sinter.Progress] = []
    stats = qec_kiln.collect(num_workers=1, tasks=tasks, decoders=["pymatching"], max_shots=700,
                             max_errors=None, progress_callback=seen.append,
                             bucket=str(tmp_path / "b"))
    want = {sinter_strong_id(repetition_circuit(3), "pymatching", {"d": 3}): 300,
            sinter_strong_id(repetition_circuit(5), "pymatching", {"d": 5}): 700}
    assert {s.strong_id: s.shots for s in stats} == want and _shots(seen) == want
    store = open_bucket(str(tmp_path / "b"))
    (sweep,) = list_sweeps(store)
    shards = [sh for b in load_manifest(store, sweep).batches for sh in b.shards]
    assert {sh.circuit: sh.batch_options for sh in shards} == {"d=3.stim": (None, 50, None),
                                                              "d=5.stim": (16, None, None)}
    assert len(sinter_runs(shards)) == 2
    logs = "".join(f.read_text() for f in (tmp_path / "b").glob("*/logs/*.log"))
    assert ", --max_batch_size 50\n" in logs and ", --start_batch_size 16\n" in logs


@pytest.mark.slow
def test_a_notebook_decoder_object_on_the_local_backend(tmp_path):
    """``custom_decoders={name: object}`` of a notebook's ``__main__``: the object is shipped
    and run by the local nodes' sinter, with sinter's strong_ids and exact counts (noiseless
    circuits: ``AlwaysFlip(1)`` makes every shot an error, ``AlwaysFlip(0)`` none)."""
    from kiln_helpers import notebook, repetition_circuit, sinter_strong_id

    cell = notebook()
    quiet = [sinter.Task(circuit=repetition_circuit(d, 0.0), json_metadata={"d": d}) for d in (3, 5)]
    stats = qec_kiln.collect(num_workers=1, tasks=quiet, decoders=["flip", "keep"],
                             custom_decoders={"flip": cell.AlwaysFlip(1),
                                              "keep": cell.AlwaysFlip(0)},
                             max_shots=500, max_errors=10**6, bucket=str(tmp_path / "b"))
    got = {s.strong_id: (s.decoder, s.shots, s.errors) for s in stats}
    assert got == {sinter_strong_id(repetition_circuit(d, 0.0), name, {"d": d}): (name, 500, 500 * flips)
                   for d in (3, 5) for name, flips in (("flip", 1), ("keep", 0))}


def test_an_unknown_decoder_raises_naming_it(tmp_path):
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    with pytest.raises(KilnError, match="nope"):
        qec_kiln.collect(num_workers=1, tasks=[task], decoders=["nope"], max_shots=10,
                         bucket=str(tmp_path / "b"))


def test_closing_before_the_first_step_starts_nothing(tmp_path):
    it = qec_kiln.iter_collect(num_workers=1, tasks=[sinter.Task(circuit=repetition_circuit(),
                               json_metadata=None)], max_shots=10, bucket=str(tmp_path / "b"))
    first = next(it)
    assert first.new_stats == () and "Starting" in first.status_message
    it.close()
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_per_task_options_decoders_paths_and_null_metadata(tmp_path):
    """Each task stops at its own combined targets; a task naming its decoder runs with that
    one only; circuit_path and json_metadata=None give sinter's strong_ids; the progress
    callback sees every row, and the counts of observable combos are sinter's."""
    path = tmp_path / "c.stim"
    path.write_text(str(repetition_circuit(5)))
    tasks = [
        sinter.Task(circuit=repetition_circuit(3), json_metadata={"d": 3},
                    collection_options=sinter.CollectionOptions(max_shots=300)),
        sinter.Task(circuit=repetition_circuit(3, 0.02), json_metadata=None, decoder="vacuous"),
        sinter.Task(circuit_path=str(path), json_metadata=[5, "x"]),
    ]
    seen: list[sinter.Progress] = []
    stats = qec_kiln.collect(num_workers=1, tasks=(t for t in tasks), hint_num_tasks=3,
                             decoders=["pymatching"], max_shots=1000, max_errors=None,
                             count_observable_error_combos=True, progress_callback=seen.append,
                             bucket=str(tmp_path / "b"))
    want = {sinter_strong_id(repetition_circuit(3), "pymatching", {"d": 3}): 300,
            sinter_strong_id(repetition_circuit(3, 0.02), "vacuous", None): 1000,
            sinter_strong_id(repetition_circuit(5), "pymatching", [5, "x"]): 1000}
    assert {s.strong_id: s.shots for s in stats} == want
    assert all(isinstance(p, sinter.Progress) for p in seen) and _shots(seen) == want
    for s in stats:
        assert sum(v for k, v in s.custom_counts.items() if k.startswith("obs_mistake_mask=")) \
            == s.errors


@pytest.mark.slow
def test_save_resume_filepath_twice_and_existing_data(tmp_path, capsys):
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    sid = sinter_strong_id(repetition_circuit(), "pymatching", {"d": 3})
    earlier = sinter.collect(num_workers=1, tasks=[task], decoders=["pymatching"], max_shots=400,
                             max_errors=10**6)
    old = tmp_path / "old.csv"
    old.write_text(sinter.CSV_HEADER + "\n" + earlier[0].to_csv_line() + "\n")
    resume = tmp_path / "resume.csv"
    seen: list[sinter.Progress] = []
    kw = dict(num_workers=1, tasks=[task], decoders=["pymatching"], max_shots=1000,
              max_errors=10**6, save_resume_filepath=resume, existing_data_filepaths=[old])
    first = qec_kiln.collect(**kw, progress_callback=seen.append, bucket=str(tmp_path / "b"),
                             print_progress=True)
    assert _shots(seen) == {sid: 600}  # the existing 400 count toward the target
    assert "0 task(s) left of 1, 600 shots" in capsys.readouterr().err  # print_progress
    assert [(s.strong_id, s.shots) for s in first] == [(sid, 1000)]
    rows = sinter.read_stats_from_csv_files(resume)
    assert sum(r.shots for r in rows) == 600 and {r.strong_id for r in rows} == {sid}
    for bucket in ("b", "elsewhere"):  # the same bucket, or one that never saw these rows
        again: list[sinter.Progress] = []
        stats = qec_kiln.collect(**kw, progress_callback=again.append,
                                 bucket=str(tmp_path / bucket))
        assert _shots(again) == {} and [(s.strong_id, s.shots) for s in stats] == [(sid, 1000)]
        assert sum(r.shots for r in sinter.read_stats_from_csv_files(resume)) == 600


@pytest.mark.slow
def test_iter_collect_closed_early_then_resumed(tmp_path):
    """Closing the generator cancels the sweep (complete rows kept); the same call again
    resumes it and samples exactly what was left."""
    task = sinter.Task(circuit=repetition_circuit(9, 0.01), json_metadata={"d": 9})
    sid = sinter_strong_id(repetition_circuit(9, 0.01), "pymatching", {"d": 9})
    target = 6_000_000  # many sync periods: the close lands well before the batch ends
    kw = dict(num_workers=1, tasks=[task], decoders=["pymatching"], max_shots=target,
              max_errors=10**9, bucket=str(tmp_path / "b"))
    first = 0
    it = qec_kiln.iter_collect(**kw)
    for p in it:
        first += sum(s.shots for s in p.new_stats)
        if first:
            break
    it.close()
    assert 0 < first < target
    (report,) = qec_kiln.status(str(tmp_path / "b"))
    assert report.fraction_done < 1 and not any(b.job and b.job.active for b in report.batches)
    held = sum(s.shots for s in qec_kiln.merge(str(tmp_path / "b"), None).stats)
    assert first <= held < target  # every complete line kept
    more = sum(s.shots for p in qec_kiln.iter_collect(**kw) for s in p.new_stats)
    assert more == target - held
    (st,) = qec_kiln.merge(str(tmp_path / "b"), None).stats
    assert (st.strong_id, st.shots) == (sid, target)


@pytest.mark.slow
def test_detection_events_as_the_error_count(tmp_path):
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    (st,) = qec_kiln.collect(num_workers=1, tasks=[task], decoders=["pymatching"],
                             max_shots=10**6, max_errors=500, count_detection_events=True,
                             custom_error_count_key="detection_events", max_batch_size=100,
                             allowed_cpu_affinity_ids=[0], bucket=str(tmp_path / "b"))
    # sinter stops a task once its custom count reaches max_errors: far below max_shots here
    assert st.custom_counts["detection_events"] >= 500 and st.shots < 10**4
    assert st.strong_id == sinter_strong_id(repetition_circuit(), "pymatching", {"d": 3})
    logs = "".join(f.read_text() for f in (tmp_path / "b").glob("*/logs/*.log"))
    assert "processes 1, CPUs 0\n" in logs  # allowed_cpu_affinity_ids: the batch's CPUs


@pytest.mark.slow
def test_additional_existing_data_counts_toward_the_targets(tmp_path):
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    had = sinter.TaskStats(strong_id=sinter_strong_id(repetition_circuit(), "pymatching", {"d": 3}),
                           decoder="pymatching", json_metadata={"d": 3}, shots=700)
    got = list(qec_kiln.iter_collect(num_workers=1, tasks=[task], decoders=["pymatching"],
                                     max_shots=1000, additional_existing_data=[had],
                                     bucket=str(tmp_path / "b")))
    assert _shots(got) == {had.strong_id: 300}




_FAILING_DECODER = '''
import sinter


class Failing(sinter.Decoder):
    def compile_decoder_for_dem(self, *, dem):
        raise RuntimeError("this decoder always fails")


def decoders():
    return {"failing": Failing()}
'''


@pytest.mark.slow
def test_a_failing_decoder_raises_naming_the_task_and_its_last_error_line(tmp_path, monkeypatch):
    (tmp_path / "kiln_failing_decoder.py").write_text(_FAILING_DECODER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # sinter's spawned workers import it too
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    with pytest.raises(KilnError, match=r"b000 \[\{'d': 3\} \(failing\)\]: .*RuntimeError: this "
                       "decoder always fails"):
        qec_kiln.collect(num_workers=1, tasks=[task], decoders=["failing"], max_shots=100,
                         custom_decoders_module_function="kiln_failing_decoder:decoders",
                         bucket=str(tmp_path / "b"))


@pytest.mark.slow
def test_where_forking_is_unsafe_the_launch_runs_in_a_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("QEC_KILN_FORK", "0")  # as a notebook's threads would
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    got = list(qec_kiln.iter_collect(num_workers=1, tasks=[task], decoders=["pymatching"],
                                     max_shots=700, bucket=str(tmp_path / "b")))
    assert _shots(got) == {sinter_strong_id(repetition_circuit(), "pymatching", {"d": 3}): 700}


def _fake_sweep(monkeypatch, job_states):
    """``_remote_done``'s reads faked: one unfinished batch, no job of it active; the backend's
    ``job_states`` is ``job_states`` (a function)."""
    import types

    import qec_kiln._backends as backends
    import qec_kiln._report.failures as failures
    import qec_kiln._report.status as status
    import qec_kiln._storage as storage
    import qec_kiln._sweep.manifest as manifest

    batch = types.SimpleNamespace(done=False, job=None)
    monkeypatch.setattr(storage, "open_bucket", lambda url: types.SimpleNamespace(url=url))
    monkeypatch.setattr(manifest, "load_manifest",
                        lambda store, sweep: types.SimpleNamespace(backend="slurm"))
    monkeypatch.setattr(backends, "get_backend",
                        lambda name: types.SimpleNamespace(job_states=job_states))
    monkeypatch.setattr(status, "sweep_progress", lambda store, m, states: types.SimpleNamespace(
        batches=[batch], unfinished=["b000"]))
    monkeypatch.setattr(failures, "batch_error", lambda store, sweep, b: "boom")


def test_unreadable_job_states_are_not_idle_polls(monkeypatch):
    """A squeue timeout is not "no job running": polling goes on, saying so, where three polls
    of an empty queue end the sweep as unfinished."""
    from qec_kiln._collect import _remote_done

    def timeout(url, sweep):
        raise KilnError("squeue timed out")

    _fake_sweep(monkeypatch, timeout)
    end = {"bucket": "b", "sweep": "s"}
    lines: list[str] = []
    idle = 0
    for _ in range(5):
        idle = _remote_done(end, idle, lines.append)
    assert idle == 0
    assert len(lines) == 5 and "squeue timed out" in lines[0] and "polling on" in lines[0]
    _fake_sweep(monkeypatch, lambda url, sweep: {})
    assert _remote_done(end, 0, None) == 1 and _remote_done(end, 1, None) == 2
    with pytest.raises(KilnError, match=r"'s' ended unfinished \(b000: boom\)"):
        _remote_done(end, 2, None)


def test_a_damaged_fragment_of_another_sweep_leaves_collects_rows_whole(tmp_path):
    """collect returns its tasks' rows from the sweeps that hold them; a damaged fragment of an
    unrelated sweep in the same bucket is not read (it once dropped every row silently)."""
    bucket = str(tmp_path / "b")
    other = sinter.Task(circuit=repetition_circuit(5), json_metadata={"d": 5})
    qec_kiln.collect(tasks=[other], num_workers=1, decoders=["vacuous"], max_shots=100,
                     bucket=bucket)
    (frag,) = [f for f in (tmp_path / "b").glob("*/fragments/*.csv")]
    frag.write_text("not a sinter csv\n" + frag.read_text())  # the other sweep, damaged
    mine = sinter.Task(circuit=repetition_circuit(3), json_metadata={"d": 3})
    stats = qec_kiln.collect(tasks=[mine], num_workers=1, decoders=["vacuous"], max_shots=300,
                             bucket=bucket)
    assert [(s.strong_id, s.shots) for s in stats] == [
        (sinter_strong_id(repetition_circuit(3), "vacuous", {"d": 3}), 300)]


def test_an_unreadable_bucket_raises_rather_than_counting_resume_rows_twice(tmp_path,
                                                                             monkeypatch):
    """The resume file repeats the bucket's rows: unable to read the bucket, the call raises
    (it once took every resume row as new, counting and returning it twice)."""
    from qec_kiln._errors import StorageError
    from qec_kiln._storage._local import LocalBucket

    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    kw = dict(tasks=[task], num_workers=1, decoders=["vacuous"], max_shots=200,
              bucket=str(tmp_path / "b"), save_resume_filepath=str(tmp_path / "r.csv"))
    assert [s.shots for s in qec_kiln.collect(**kw)] == [200]

    def broken(self, key, **_kw):
        raise StorageError(f"{key}: permission denied")

    monkeypatch.setattr(LocalBucket, "read_bytes", broken)
    with pytest.raises(KilnError, match=r"cannot read the bucket's rows .*permission denied"):
        qec_kiln.collect(**kw)
    monkeypatch.undo()
    assert [s.shots for s in qec_kiln.collect(**kw)] == [200]


def test_a_resume_file_with_a_torn_last_line_is_cut_back_before_appending(tmp_path):
    task = sinter.Task(circuit=repetition_circuit(), json_metadata={"d": 3})
    resume = tmp_path / "r.csv"
    kw = dict(tasks=[task], num_workers=1, decoders=["vacuous"], max_shots=100,
              bucket=str(tmp_path / "b"), save_resume_filepath=str(resume))
    qec_kiln.collect(**kw)
    whole = resume.read_text()
    resume.write_text(whole + whole.splitlines()[-1][:20])  # a row cut short by a crash
    stats = qec_kiln.collect(**{**kw, "max_shots": 300})
    assert [s.shots for s in stats] == [300]
    text = resume.read_text()
    assert text.startswith(whole) and text.endswith("\n")
    assert sum(s.shots for s in sinter.read_stats_from_csv_files(resume)) == 300

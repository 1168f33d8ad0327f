"""Issue 29 on a fleet: ``qec_kiln.collect`` / ``qec_kiln.iter_collect`` on the real Slurm test
cluster (Debian's slurm-wlm on localhost, ``slurm_cluster``), each array task the real
run-batch running the unmodified ``sinter collect``: the rows are yielded exactly, a second call
submits nothing, a call while the jobs still run follows them to exact totals, an error of the
monitor's own check leaves the jobs running, Ctrl-C mid-submission cancels, a notebook's
decoder object and per-task ``collection_options`` run on the nodes with exact counts, and a
sweep whose job fails raises naming the batch and the node's last error line instead of
polling forever.

The circuits are noiseless where a count must be exact in errors too: ``AlwaysFlip(1)``
(kiln_helpers.NOTEBOOK_CELL) makes every shot an error.
"""

from __future__ import annotations

import pathlib
import types

import pytest
import sinter
from kiln_helpers import notebook, repetition_circuit, sinter_strong_id

import qec_kiln
from qec_kiln._errors import KilnError

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(300)]


def _totals(progress: list[sinter.Progress]) -> dict[str, tuple[int, int]]:
    """strong_id -> (shots, errors) summed over every yielded row."""
    out: dict[str, tuple[int, int]] = {}
    for p in progress:
        for st in p.new_stats:
            shots, errors = out.get(st.strong_id, (0, 0))
            out[st.strong_id] = (shots + st.shots, errors + st.errors)
    return out


class _Submitted(list):
    """Job ids, with the scripts submitted."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []


@pytest.fixture
def sbatches(slurm_cluster, monkeypatch) -> list[str]:
    """The job id of every ``sbatch`` qec-kiln runs (each one run for real on the test
    cluster, only recorded here); ``sbatches.scripts``: the batch scripts it submitted."""
    from qec_kiln._backends.remote import run_command
    from qec_kiln._backends.slurm.backend import SlurmBackend

    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    seen = _Submitted()

    def recorded(argv, **kw):
        proc = run_command(argv, **kw)
        if argv[0] == "sbatch":
            assert proc.returncode == 0, proc.stderr
            seen.append(proc.stdout.strip().split(";")[0])
            seen.scripts.append(pathlib.Path(argv[-1]).read_text())
        return proc

    monkeypatch.setattr(SlurmBackend, "default_runner", staticmethod(recorded))
    return seen


def _kw(tmp_path, tasks, **more):
    return dict(num_workers=1, tasks=tasks, bucket=str(tmp_path / "b"), backend="slurm",
                poll_seconds=0.5, backend_options={"sync_seconds": 1.0},
                log=lambda _line: None, **more)


def test_iter_collect_on_slurm_yields_the_rows_and_collect_again_submits_nothing(
        slurm_cluster, sbatches, tmp_path):
    tasks = [sinter.Task(circuit=repetition_circuit(d, 0.05), json_metadata={"d": d}) for d in (3, 5)]
    kw = _kw(tmp_path, tasks, decoders=["pymatching"], max_shots=2000, jobs=2)
    got = list(qec_kiln.iter_collect(**kw))
    want = {sinter_strong_id(repetition_circuit(d, 0.05), "pymatching", {"d": d}): 2000 for d in (3, 5)}
    assert {sid: shots for sid, (shots, _) in _totals(got).items()} == want
    (array,) = sbatches  # one array of two tasks, each ending on its own (its lease, its log)
    slurm_cluster.wait_for(lambda: list(slurm_cluster.states(array).values())
                           == ["COMPLETED", "COMPLETED"], 60, "the array's tasks to complete")
    stats = qec_kiln.collect(**kw)  # the same sweep: done, nothing submitted again
    assert {s.strong_id: s.shots for s in stats} == want
    assert len(sbatches) == 1


def test_collect_while_the_sweeps_jobs_still_run_waits_for_them(slurm_cluster, sbatches,
                                                                  tmp_path):
    """A second call while the first call's jobs run (a notebook restarted, an iteration left
    open) has nothing to submit: it follows those jobs to the end and returns exact totals
    (it once returned the rows landed so far, with no error)."""
    task = sinter.Task(circuit=repetition_circuit(9, 0.01), json_metadata={"d": 9})
    kw = _kw(tmp_path, [task], decoders=["pymatching"], max_shots=10_000_000, max_errors=10**9)
    it = qec_kiln.iter_collect(**kw)
    first = 0
    for p in it:
        first += sum(s.shots for s in p.new_stats)
        if first:
            break
    assert 0 < first < 10_000_000  # the job runs on: the iteration is neither closed nor resumed
    stats = qec_kiln.collect(**kw)
    assert [(s.strong_id, s.shots) for s in stats] == [
        (sinter_strong_id(repetition_circuit(9, 0.01), "pymatching", {"d": 9}), 10_000_000)]
    assert len(sbatches) == 1  # the second call submitted nothing
    it.close()


def test_a_failing_check_of_the_monitor_leaves_the_jobs_running(slurm_cluster, sbatches,
                                                                 tmp_path, monkeypatch):
    """Only the caller's close or Ctrl-C cancels the jobs: an error of the monitor's own
    check (here faked) raises, and the job runs on to the exact total."""
    import qec_kiln._collect as api

    def broken(end, idle, log):
        raise KilnError("the monitor's check failed")

    task = sinter.Task(circuit=repetition_circuit(9, 0.01), json_metadata={"d": 9})
    kw = _kw(tmp_path, [task], decoders=["pymatching"], max_shots=10_000_000, max_errors=10**9)
    with monkeypatch.context() as patched, pytest.raises(KilnError, match="the monitor's check"):
        patched.setattr(api, "_remote_done", broken)
        qec_kiln.collect(**kw)
    (array,) = sbatches
    (state,) = slurm_cluster.states(array).values()
    assert state in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED")  # not CANCELLED
    stats = qec_kiln.collect(**kw)
    assert [s.shots for s in stats] == [10_000_000] and len(sbatches) == 1
    slurm_cluster.wait_for(lambda: list(slurm_cluster.states(array).values()) == ["COMPLETED"],
                           60, "the job to complete")


def test_ctrl_c_during_the_submission_cancels_what_was_submitted(slurm_cluster, sbatches,
                                                                  tmp_path, monkeypatch):
    """A Ctrl-C once ``sbatch`` returned and its job was recorded, before the launch reported
    its end, cancels the submitted job rather than leaving it to run unwatched."""
    import qec_kiln._backends.slurm.backend as slurm

    recorded = slurm.append_launch_record

    def interrupted(*args, **kw):
        recorded(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(slurm, "append_launch_record", interrupted)
    task = sinter.Task(circuit=repetition_circuit(9, 0.01), json_metadata={"d": 9})
    with pytest.raises(KeyboardInterrupt):
        qec_kiln.collect(**_kw(tmp_path, [task], decoders=["pymatching"], max_shots=10_000_000,
                               max_errors=10**9))
    (array,) = sbatches
    slurm_cluster.wait_for(lambda: list(slurm_cluster.states(array).values()) == ["CANCELLED"],
                           30, "the submitted job to be cancelled")


def test_a_notebook_decoder_object_and_per_task_options_run_on_slurm_exactly(
        slurm_cluster, sbatches, tmp_path):
    """Issue 29's done-when on a fleet: a ``sinter.Decoder`` object of a notebook's
    ``__main__``, two tasks with their own max_shots (and their own max_batch_size, so they
    run in sinters of their own), through ``iter_collect`` on the real Slurm cluster."""
    cell = notebook()
    tasks = [sinter.Task(circuit=repetition_circuit(3, 0.0), json_metadata={"d": 3}, collection_options=
                         sinter.CollectionOptions(max_shots=300, max_batch_size=100)),
             sinter.Task(circuit=repetition_circuit(5, 0.0), json_metadata={"d": 5}, collection_options=
                         sinter.CollectionOptions(max_shots=700))]
    kw = _kw(tmp_path, tasks, decoders=["flip"], custom_decoders={"flip": cell.AlwaysFlip(1)},
             max_shots=10**6, max_errors=10**6)
    got = list(qec_kiln.iter_collect(**kw))
    want = {sinter_strong_id(repetition_circuit(3, 0.0), "flip", {"d": 3}): (300, 300),
            sinter_strong_id(repetition_circuit(5, 0.0), "flip", {"d": 5}): (700, 700)}
    assert _totals(got) == want  # each task stops at its own target, every shot an error
    logs = "".join(f.read_text() for f in (tmp_path / "b").glob("*/logs/*.log"))
    assert ", --max_batch_size 100\n" in logs  # d=3's own sinter, with its own batch size
    assert len(sbatches) == 1
    again = qec_kiln.collect(**kw)
    assert {s.strong_id: (s.shots, s.errors) for s in again} == want and len(sbatches) == 1


_FAILING_CELL = '''
import sinter


class Failing(sinter.Decoder):
    def compile_decoder_for_dem(self, *, dem):
        raise RuntimeError("this decoder object always fails")
'''


def test_a_sweep_whose_slurm_job_fails_raises_naming_the_batch_and_its_error(
        slurm_cluster, sbatches, tmp_path):
    cell = types.ModuleType("__main__")  # a notebook's class: pickled by value, fails on the node
    exec(compile(_FAILING_CELL, "<notebook cell>", "exec"), cell.__dict__)  # noqa: S102
    task = sinter.Task(circuit=repetition_circuit(3, 0.0), json_metadata={"d": 3})
    lines: list[str] = []
    with pytest.raises(KilnError, match=r"ended unfinished \(b000: .*RuntimeError: this decoder "
                       r"object always fails\); collect again"):
        qec_kiln.collect(**{**_kw(tmp_path, [task], decoders=["failing"], max_shots=100,
                                  custom_decoders={"failing": cell.Failing()}),
                            "num_workers": 2, "log": lines.append})
    assert any("shared file system" in line for line in lines)  # a local bucket: warned
    (script,) = sbatches.scripts
    assert "--processes 2" in script  # num_workers: sinter's processes on each node
    (array,) = sbatches
    assert list(slurm_cluster.states(array).values()) == ["FAILED"]

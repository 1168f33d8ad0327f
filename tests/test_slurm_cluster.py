"""The real single-node Slurm test cluster works, and Slurm does what the Slurm backend relies on.

Facts checked here on Slurm 22.05.8 (Debian 12 ``slurm-wlm``), each by a test below:

* ``sbatch --array=0-2 --requeue`` runs every task; each sees ``SLURM_ARRAY_TASK_ID``.
* **A killed task does not come back by itself.** ``scancel --signal=KILL <job>_<task>`` is
  treated as a cancel: the task ends ``CANCELLED`` (``ExitCode=0:15``). ``scancel --batch
  --signal=KILL`` kills only the batch shell: the task ends ``FAILED`` (``ExitCode=0:9``,
  ``Reason=JobLaunchFailure``). Neither is requeued, ``--requeue`` notwithstanding: Slurm requeues
  on its own only when the *node* fails (or for preemption), see the last test.
* ``scontrol requeue <job>_<task>`` brings such a task back (also a RUNNING one, which it kills
  first): ``PENDING`` with ``Reason=BeginTime``; it starts again after ``AuthInfo cred_expire``
  seconds (**Slurm's default is 120 s**; this cluster sets 10) plus a scheduler pass, from the top
  of the batch script, with ``SLURM_RESTART_COUNT=1``. It only works while slurmctld still has the
  record (``MinJobAge`` after the end: 30 s here, 300 s by default).
* A node that goes ``DOWN`` makes Slurm requeue its ``--requeue`` tasks by itself (same
  ``BeginTime`` delay, ``SLURM_RESTART_COUNT=1``); a ``--no-requeue`` job ends ``NODE_FAIL``.
* ``scancel --signal=TERM <job>`` does **not** reach the batch script (it signals job steps only;
  a batch job without ``srun`` steps keeps running). ``scancel --batch --signal=TERM`` and
  ``scancel --full --signal=TERM`` deliver SIGTERM to the batch script at once; a trap that exits 0
  leaves the job ``COMPLETED``. A plain ``scancel <job>`` also sends SIGTERM to the batch script
  (SIGKILL follows after ``KillWait``: 5 s here, 30 s by default); the job ends ``CANCELLED``.
* ``sbatch --time=1 --signal=B:TERM@60`` delivers SIGTERM to the batch shell, here to a process
  that the script ``exec``-ed, before the time limit: slurmctld checks time limits only every 30 s,
  so it arrives 0-30 s late (Slurm's man page: "up to 60 seconds earlier than specified").
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


# A batch script that records each start (with the restart count) and then sleeps.
STARTS = """\
echo "start ${SLURM_RESTART_COUNT:-0}" >> "$1/starts-${SLURM_ARRAY_TASK_ID:-x}"
while :; do sleep 1 & wait $!; done  # a killed sleep must not end the script
"""

# A batch script that traps SIGTERM and records it.
TRAP = """\
trap 'echo TERM >> "$1/marker-$SLURM_JOB_ID"; exit 0' TERM
echo start >> "$1/marker-$SLURM_JOB_ID"
while :; do sleep 1 & wait $!; done  # a killed sleep must not end the script
"""

# The shape of the real template: the batch shell exec's a program that handles SIGTERM.
EXEC_HANDLER = """\
exec {python} -c '
import signal, sys, time
def on_term(signum, frame):
    with open(sys.argv[1], "a") as f:
        f.write("TERM %f\\n" % time.time())
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(sys.argv[1], "a") as f:
    f.write("start %f\\n" % time.time())
time.sleep(300)
' "$1/marker"
"""


@pytest.fixture(scope="module")
def timed_job(slurm_cluster, tmp_path_factory):
    """A 1-minute job with ``--signal=B:TERM@60``, submitted first: its signal may take 30 s."""
    work = tmp_path_factory.mktemp("timed")
    script = _write_script(work / "job.sh", EXEC_HANDLER.format(python=shlex.quote(sys.executable)))
    job = slurm_cluster.sbatch(["--time=1", "--signal=B:TERM@60", "-o", str(work / "out.log"),
                                str(script), str(work)])
    yield job, work, time.time()
    slurm_cluster.run(["scancel", job], check=False)


def test_array_runs_every_task(slurm_cluster, timed_job, tmp_path):
    wrap = f'echo "$SLURM_ARRAY_TASK_ID" > {shlex.quote(str(tmp_path))}/task-"$SLURM_ARRAY_TASK_ID"'
    job = slurm_cluster.sbatch(["--array=0-2", "--requeue", "-o", str(tmp_path / "log-%A_%a"),
                                "--wrap", wrap])
    expected = {f"{job}_{task}": "COMPLETED" for task in range(3)}
    slurm_cluster.wait_for(lambda: slurm_cluster.states(job) == expected, 30, "3 completed tasks")
    for task in range(3):
        assert (tmp_path / f"task-{task}").read_text().strip() == str(task)
        assert (tmp_path / f"log-{job}_{task}").exists()


def test_killed_task_stays_dead_until_scontrol_requeue(slurm_cluster, timed_job, tmp_path):
    script = _write_script(tmp_path / "job.sh", STARTS)
    job = slurm_cluster.sbatch(["--array=0-1", "--requeue", "-o", "/dev/null", str(script),
                                str(tmp_path)])
    t0, t1 = f"{job}_0", f"{job}_1"
    try:
        slurm_cluster.wait_for(
            lambda: _lines(tmp_path / "starts-0") and _lines(tmp_path / "starts-1"), 30,
            "both tasks to start")
        slurm_cluster.run(["scancel", "--signal=KILL", t1])
        slurm_cluster.run(["scancel", "--batch", "--signal=KILL", t0])
        slurm_cluster.wait_for(
            lambda: slurm_cluster.states(job) == {t0: "FAILED", t1: "CANCELLED"}, 15,
            "the killed tasks to end")
        assert slurm_cluster.job_info(t1)["ExitCode"] == "0:15"
        assert slurm_cluster.job_info(t0)["ExitCode"] == "0:9"
        time.sleep(3)  # --requeue does not bring them back by itself
        assert slurm_cluster.states(job) == {t0: "FAILED", t1: "CANCELLED"}

        slurm_cluster.run(["scontrol", "requeue", f"{t0},{t1}"])
        info = slurm_cluster.job_info(t1)
        assert (info["JobState"], info["Restarts"]) == ("PENDING", "1")
        slurm_cluster.wait_for(
            lambda: len(_lines(tmp_path / "starts-0")) == 2 == len(_lines(tmp_path / "starts-1")),
            40, "both tasks to run again")
        assert _lines(tmp_path / "starts-1") == ["start 0", "start 1"]
        assert _lines(tmp_path / "starts-0") == ["start 0", "start 1"]
    finally:
        slurm_cluster.run(["scancel", job], check=False)
    slurm_cluster.wait_for(lambda: set(slurm_cluster.states(job).values()) == {"CANCELLED"}, 20,
                           "the array to be cancelled")


def test_scancel_term_reaches_batch_script_only_with_batch_or_full(slurm_cluster, timed_job,
                                                                   tmp_path):
    script = _write_script(tmp_path / "trap.sh", TRAP)
    by_batch, by_full, cancelled = (
        slurm_cluster.sbatch(["-o", "/dev/null", str(script), str(tmp_path)]) for _ in range(3)
    )
    jobs = [by_batch, by_full, cancelled]
    try:
        slurm_cluster.wait_for(
            lambda: all(_lines(tmp_path / f"marker-{j}") == ["start"] for j in jobs), 30,
            "the three jobs to start")
        # Without --batch/--full, a signal goes to job steps only: the batch script never sees it.
        slurm_cluster.run(["scancel", "--signal=TERM", by_batch])
        time.sleep(1.5)
        assert _lines(tmp_path / f"marker-{by_batch}") == ["start"]
        assert slurm_cluster.job_info(by_batch)["JobState"] == "RUNNING"

        slurm_cluster.run(["scancel", "--batch", "--signal=TERM", by_batch])
        slurm_cluster.run(["scancel", "--full", "--signal=TERM", by_full])
        slurm_cluster.run(["scancel", cancelled])
        slurm_cluster.wait_for(
            lambda: all(_lines(tmp_path / f"marker-{j}") == ["start", "TERM"] for j in jobs), 15,
            "the TERM markers")
        slurm_cluster.wait_for(
            lambda: [slurm_cluster.job_info(j)["JobState"] for j in jobs]
            == ["COMPLETED", "COMPLETED", "CANCELLED"], 15, "the signalled jobs to end")
    finally:
        slurm_cluster.run(["scancel", *jobs], check=False)


def test_signal_before_time_limit_reaches_exec_ed_process(slurm_cluster, timed_job):
    job, work, _submitted = timed_job
    marker = work / "marker"
    slurm_cluster.wait_for(lambda: any(x.startswith("TERM") for x in _lines(marker)), 60,
                           "SIGTERM from --signal=B:TERM@60")
    start, term = (float(line.split()[1]) for line in _lines(marker))
    assert 0 <= term - start < 45, (start, term)
    slurm_cluster.wait_for(lambda: slurm_cluster.job_info(job)["JobState"] == "COMPLETED", 15,
                           "the job to complete (its handler exits 0), not to time out")
    run_time = slurm_cluster.job_info(job)["RunTime"]  # [D-]HH:MM:SS of the job itself
    hours, minutes, seconds = map(int, run_time.split("-")[-1].split(":"))
    assert "-" not in run_time and hours * 3600 + minutes * 60 + seconds < 60, run_time


def test_node_failure_requeues_requeueable_tasks(slurm_cluster, tmp_path):
    """Runs last: it takes the node down and back up."""
    script = _write_script(tmp_path / "job.sh", STARTS)
    requeue = slurm_cluster.sbatch(["--array=0", "--requeue", "-o", "/dev/null", str(script),
                                    str(tmp_path)])
    no_requeue = slurm_cluster.sbatch(["--no-requeue", "-o", "/dev/null", str(script),
                                       str(tmp_path)])
    node = slurm_cluster.node
    try:
        slurm_cluster.wait_for(
            lambda: _lines(tmp_path / "starts-0") and _lines(tmp_path / "starts-x"), 30,
            "both jobs to start")
        slurm_cluster.run(["scontrol", "update", f"nodename={node}", "state=down",
                           "reason=kiln-test"])
        slurm_cluster.wait_for(
            lambda: slurm_cluster.job_info(no_requeue)["JobState"] == "NODE_FAIL", 15,
            "the --no-requeue job to end NODE_FAIL")
        assert slurm_cluster.job_info(f"{requeue}_0")["JobState"] in ("PENDING", "RUNNING")
        _resume(slurm_cluster)
        slurm_cluster.wait_for(lambda: len(_lines(tmp_path / "starts-0")) == 2, 40,
                               "the --requeue task to run again")
        assert _lines(tmp_path / "starts-0") == ["start 0", "start 1"]
        assert _lines(tmp_path / "starts-x") == ["start 0"]
    finally:
        slurm_cluster.run(["scancel", requeue, no_requeue], check=False)
        _resume(slurm_cluster)
    slurm_cluster.wait_gone([requeue, no_requeue], 30)


def _resume(cluster) -> None:
    """Put the node back in service (ReturnToService=2 may already have done it)."""

    def idle() -> bool:
        state = cluster.run(["sinfo", "--noheader", "-N", "-n", cluster.node, "-o", "%T"],
                            check=False).stdout.strip()
        if state in ("idle", "mixed", "allocated"):
            return True
        cluster.run(["scontrol", "update", f"nodename={cluster.node}", "state=resume"],
                    check=False)
        return False

    cluster.wait_for(idle, 30, "the node to be back in service", interval=1.0)

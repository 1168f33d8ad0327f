"""Slurm backend: template rendering and option checks, the commands it runs (through a fake
runner), and, on the real single-node test cluster (``slurm_cluster``), a launched job array whose
tasks get SIGTERM from ``cancel`` and a whole sweep run end to end with ``qec-kiln launch
--backend slurm``."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sinter
from kiln_helpers import REPO, run_kiln, wait_until, write_surface_circuits

from qec_kiln._backends import LaunchRequest, get_backend
from qec_kiln._backends.slurm import backend as sl
from qec_kiln._errors import KilnError

HOSTILE_BUCKET = "s3://my-bucket/pre fix/$(touch /tmp/pwned)'\"`;|&*?~"
HOSTILE_SWEEP = "d3 to d13; rm -rf ~ ${HOME}"


def request(batches=("b000", "b003", "b007"), bucket="s3://bkt/sweeps", sweep="surface-d3",
            **opts) -> LaunchRequest:
    return LaunchRequest(bucket, sweep, tuple(batches), sl.SlurmOptions(**opts),
                         num_batches_total=8, kiln_version="0.1.0")


class FakeRunner:
    """Records every argv; answers from ``replies[argv[0]]`` (a CompletedProcess or exception)."""

    def __init__(self, **replies):
        self.calls: list[list[str]] = []
        self.replies = replies

    def __call__(self, argv, *, timeout=None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        self.calls.append(argv)
        reply = self.replies.get(argv[0], (0, "", ""))
        if isinstance(reply, BaseException):
            raise reply
        rc, out, err = reply
        return subprocess.CompletedProcess(argv, rc, out, err)


def fake_kiln_bin(folder: Path, body: str) -> Path:
    """A folder holding a fake ``qec-kiln`` (bash) and a ``python`` beside it: pointing
    sys.executable there makes the rendered script put this folder first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "qec-kiln"
    exe.write_text("#!/bin/bash\n" + body)
    exe.chmod(0o755)
    (folder / "python").symlink_to(sys.executable)
    return folder


# ---------------------------------------------------------------- template and rendering


def test_template_holds_the_contract():
    text = (REPO / "configs" / "sinter_job.sbatch").read_text()
    for line in ("#SBATCH --job-name={job_name}", "#SBATCH --array={array}", "#SBATCH --requeue",
                 "#SBATCH --signal=B:TERM@60", "#SBATCH --cpus-per-task={cpus_per_task}",
                 "#SBATCH --output={log_dir}/%A_%a.out", "{sbatch_options}", "exec {run_batch}"):
        assert line in text.splitlines(), line
    # sbatch stops reading #SBATCH lines at the first command: all of them come before it.
    lines = text.splitlines()
    first_command = next(i for i, ln in enumerate(lines[1:], 1)
                         if ln.strip() and not ln.startswith("#") and ln != "{sbatch_options}")
    assert all(i < first_command for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))


def test_get_backend_state_dir_and_names(kiln_isolated):
    backend = get_backend("slurm")
    assert isinstance(backend, sl.SlurmBackend) and backend.name == "slurm"
    assert sl.state_dir("surface-d3") == kiln_isolated / "home" / "slurm" / "surface-d3"
    assert sl.job_name("surface-d3") == "kiln-surface-d3"
    for hostile in (HOSTILE_SWEEP, "../../etc", "..", "a/b"):
        name = sl.safe_name(hostile)
        assert "/" not in name and name not in (".", "..") and not name.startswith(".")
        assert sl.state_dir(hostile).parent == kiln_isolated / "home" / "slurm"


def test_describe_shows_script_and_exact_command(kiln_isolated):
    r = request(partition="debug", account="proj-1", time_limit="04:00:00",
                extra_sbatch=("--qos=long", "#SBATCH --mem=4G"), cpus="8")
    text = sl.SlurmBackend(runner=FakeRunner()).describe(r)
    script = sl.state_dir("surface-d3") / "job.sbatch"
    assert f"sbatch --parsable {script}" in text.splitlines()
    for line in ("#SBATCH --job-name=kiln-surface-d3", "#SBATCH --array=0-2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --partition=debug",
                 "#SBATCH --account=proj-1", "#SBATCH --time=04:00:00", "#SBATCH --qos=long",
                 "#SBATCH --mem=4G", "#   0=b000 1=b003 2=b007"):
        assert line in text.splitlines(), line
    assert ('exec qec-kiln run-batch --bucket s3://bkt/sweeps --sweep surface-d3 --batches '
            'b000,b003,b007 --index "$SLURM_ARRAY_TASK_ID" --sync-seconds 30 --processes 8'
            ) in text
    assert not any("{" + p + "}" in text for p in sl.PLACEHOLDERS)
    assert not script.exists()  # describe writes nothing


@pytest.mark.parametrize("opts, cpus, processes", [
    ({}, 1, 1),
    ({"cpus": "16+"}, 16, 16),
    ({"processes": 4}, 4, 4),
    ({"cpus": "8", "processes": 2}, 8, 2),
])
def test_cpus_per_task_and_sinter_processes(opts, cpus, processes):
    r = sl.SlurmBackend().render(request(**opts))
    assert f"#SBATCH --cpus-per-task={cpus}" in r.script.splitlines()
    assert f"--processes {processes}" in r.script
    assert r.cpus_per_task == cpus


@pytest.mark.parametrize("opts, culprit", [
    ({"partition": "debug; rm -rf ~"}, "--partition"),
    ({"partition": "a b"}, "--partition"),
    ({"account": "x\ny"}, "--account"),
    ({"time_limit": "4h"}, "--time"),
    ({"time_limit": "0"}, "--time"),
    ({"time_limit": "1:2:3:4"}, "--time"),
    ({"cpus": "many"}, "--cpus"),
    ({"cpus": "0"}, "--cpus"),
    ({"extra_sbatch": ("--qos=long\nrm -rf ~",)}, "--sbatch-option"),
    ({"extra_sbatch": ("qos=long",)}, "--sbatch-option"),
    ({"extra_sbatch": ("--array=0-99",)}, "--array"),
    ({"extra_sbatch": ("#SBATCH --wrap hostname",)}, "--wrap"),
])
def test_invalid_options_raise_one_clear_line(opts, culprit):
    with pytest.raises(KilnError) as info:
        sl.SlurmBackend().render(request(**opts))
    assert culprit in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["90", "30:00", "04:00:00", "1-12", "2-00:30", "1-00:00:01",
                                   "UNLIMITED", "infinite"])
def test_valid_time_limits(value):
    r = sl.SlurmBackend().render(request(time_limit=value))
    assert f"#SBATCH --time={value}" in r.script.splitlines()


def test_short_time_limit_is_noted():
    r = sl.SlurmBackend().render(request(time_limit="2"))
    assert any("SIGTERM" in n for n in r.notes)


@pytest.mark.parametrize("template, message", [
    ("#!/bin/bash\n#SBATCH --array={array}\necho hi\n", "{run_batch}"),
    ("#!/bin/bash\nexec {run_batch}\n", "--array={array}"),
    ("#!/bin/bash\n#SBATCH --array={array}\n#SBATCH --qos={qos}\nexec {run_batch}\n", "{qos}"),
    ("#SBATCH --array={array}\nexec {run_batch}\n", "#!/bin/bash"),
])
def test_bad_user_templates_name_the_file(tmp_path, template, message):
    path = tmp_path / "my job.sbatch"
    path.write_text(template)
    with pytest.raises(KilnError) as info:
        sl.SlurmBackend().render(request(sbatch_template=str(path)))
    assert str(path) in str(info.value) and message in str(info.value)
    with pytest.raises(KilnError, match="cannot read"):
        sl.SlurmBackend().render(request(sbatch_template=str(tmp_path / "missing.sbatch")))


def test_user_template_keeps_shell_braces(tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text("#!/bin/bash\n#SBATCH --array={array}\n{sbatch_options}\n"
                    'echo "${HOME}" {a,b} $((1+2))\nf() { true; }\nexec {run_batch}\n')
    r = sl.SlurmBackend().render(request(sbatch_template=str(path)))
    assert 'echo "${HOME}" {a,b} $((1+2))\nf() { true; }\n' in r.script
    assert "{sbatch_options}" not in r.script and "\n\n" not in r.script
    assert r.script.startswith("#!/bin/bash\n# Rendered by qec-kiln 0.1.0 from ")


def test_log_dir_that_sbatch_cannot_hold_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("QEC_KILN_HOME", str(tmp_path / "my home"))
    with pytest.raises(KilnError, match="QEC_KILN_HOME"):
        sl.SlurmBackend().render(request())


def test_hostile_values_reach_run_batch_verbatim(tmp_path, monkeypatch):
    """Run the rendered script with bash: the fake qec-kiln gets exactly the intended argv."""
    out = tmp_path / "argv.json"
    bindir = fake_kiln_bin(
        tmp_path / "bin dir $(touch pwned) 'q'",
        f'exec {shlex.quote(sys.executable)} -c "import json,sys; '
        f'json.dump(sys.argv[1:], open({str(out)!r}, \'w\'))" "$@"\n')
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    r = request(batches=("b000", "b001"), bucket=HOSTILE_BUCKET, sweep=HOSTILE_SWEEP)
    rendered = sl.SlurmBackend().render(r)
    script = tmp_path / "job.sh"
    script.write_text(rendered.script)
    pwned_before = Path("/tmp/pwned").exists()
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="7")
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == [
        "run-batch", "--bucket", HOSTILE_BUCKET, "--sweep", HOSTILE_SWEEP,
        "--batches", "b000,b001", "--index", "1", "--sync-seconds", "30", "--processes", "1"]
    assert not list(tmp_path.rglob("pwned")) and Path("/tmp/pwned").exists() == pwned_before
    assert f"sweep {HOSTILE_SWEEP}, array task 1 of job 7" in proc.stdout
    assert "#SBATCH --job-name=kiln-" + sl.safe_name(HOSTILE_SWEEP) in rendered.script


# ---------------------------------------------------------------- commands, through a fake runner


def test_launch_submits_one_array_and_records_it(kiln_isolated):
    runner = FakeRunner(sbatch=(0, "4242\n", ""))
    backend = sl.SlurmBackend(runner=runner)
    result = backend.launch(request())
    script = sl.state_dir("surface-d3") / "job.sbatch"
    assert runner.calls == [["sbatch", "--parsable", str(script)]]
    assert result.commands == runner.calls
    assert result.job_ids == {"b000": "4242_0", "b003": "4242_1", "b007": "4242_2"}
    assert "4242" in result.message and script.read_text().startswith("#!/bin/bash\n")
    assert (script.parent / "job-4242.sbatch").read_text() == script.read_text()
    assert (script.parent / "logs").is_dir()
    (record,) = json.loads((script.parent / "launches.json").read_text())
    assert record["array_job_id"] == "4242" and record["batches"] == ["b000", "b003", "b007"]
    assert record["bucket"] == "s3://bkt/sweeps"


@pytest.mark.parametrize("reply, message", [
    ((1, "", "sbatch: error: invalid partition specified: nope\n"), "invalid partition"),
    ((0, "Submitted batch job\n", ""), "no job id"),
    (FileNotFoundError("sbatch"), "login node"),
    (subprocess.TimeoutExpired("sbatch", 120), "did not answer"),
])
def test_launch_failures_are_one_clear_line(reply, message):
    with pytest.raises(KilnError, match=message):
        sl.SlurmBackend(runner=FakeRunner(sbatch=reply)).launch(request())


def test_job_states_squeue_then_sacct_newest_launch_wins():
    squeue = "100_0|RUNNING|None|0|\n100_1|PENDING|BeginTime|1|\n200_0|COMPLETING|None|0|\n"
    runner = FakeRunner(sbatch=(0, "100\n", ""), squeue=(0, squeue, ""),
                        sacct=(0, "100_2|CANCELLED by 0|0:15\n", ""))
    backend = sl.SlurmBackend(runner=runner)
    backend.launch(request())
    runner.replies["sbatch"] = (0, "200\n", "")
    backend.launch(request(batches=("b007",)))
    states = backend.job_states("s3://bkt/sweeps", "surface-d3")
    assert {b: (s.state, s.job_id, s.recoveries) for b, s in states.items()} == {
        "b000": ("RUNNING", "100_0", 0),
        "b003": ("PENDING", "100_1", 1),
        "b007": ("RUNNING", "200_0", 0),
    }
    assert states["b003"].active and states["b003"].detail == "BeginTime"
    assert states["b007"].detail == "COMPLETING"
    squeue_argv = next(c for c in runner.calls if c[0] == "squeue")
    assert "--jobs=100,200" in squeue_argv and "--array" in squeue_argv
    assert next(c for c in runner.calls if c[0] == "sacct")[4] == "--jobs=100"
    # Another bucket or sweep: nothing known.
    assert backend.job_states("s3://other", "surface-d3") == {}
    assert backend.job_states("s3://bkt/sweeps", "other") == {}


def test_job_states_with_accounting_disabled_and_finished_tasks():
    runner = FakeRunner(sbatch=(0, "100\n", ""), squeue=(0, "100_0|COMPLETED|None|0|\n", ""),
                        sacct=(1, "", "Slurm accounting storage is disabled\n"))
    backend = sl.SlurmBackend(runner=runner)
    backend.launch(request())
    states = backend.job_states("s3://bkt/sweeps", "surface-d3")
    assert {b: s.state for b, s in states.items()} == {"b000": "SUCCEEDED"}
    assert backend.warning == ""


@pytest.mark.parametrize("reply", [FileNotFoundError("squeue"), (1, "", "slurm_load_jobs error: "
                                   "Unable to contact slurm controller (connect failure)\n")])
def test_job_states_when_slurm_is_unreachable(reply):
    backend = sl.SlurmBackend(runner=FakeRunner(sbatch=(0, "100\n", ""), squeue=reply,
                                                sacct=(1, "", "")))
    backend.launch(request())
    assert backend.job_states("s3://bkt/sweeps", "surface-d3") == {}
    assert "unavailable" in backend.warning


def test_cancel_scancels_only_arrays_with_active_tasks():
    runner = FakeRunner(sbatch=(0, "100\n", ""),
                        squeue=(0, "100_0|COMPLETED|None|0|\n200_1|PENDING|None|0|\n", ""))
    backend = sl.SlurmBackend(runner=runner)
    backend.launch(request())
    runner.replies["sbatch"] = (0, "200\n", "")
    backend.launch(request())
    assert backend.cancel("s3://bkt/sweeps", "surface-d3") == ["200"]
    assert runner.calls[-1] == ["scancel", "200"]
    assert sl.SlurmBackend(runner=runner).cancel("s3://bkt/sweeps", "never-launched") == []
    runner.replies["squeue"] = (1, "", "Unable to contact slurm controller\n")
    with pytest.raises(KilnError, match="Unable to contact"):
        backend.cancel("s3://bkt/sweeps", "surface-d3")


# ---------------------------------------------------------------- the real test cluster

TRAP_KILN = """\
out="$QEC_TEST_OUT/task-$SLURM_ARRAY_TASK_ID"
printf '%s\\n' "$@" > "$out.argv"
echo "$SLURM_CPUS_PER_TASK" > "$out.cpus"
trap 'echo TERM >> "$out.marker"; exit 0' TERM
echo start >> "$out.marker"
while :; do sleep 1 & wait $!; done  # a killed sleep must not end the script
"""


@pytest.mark.slow
@pytest.mark.slurm
def test_launched_array_runs_and_cancel_sends_sigterm(slurm_cluster, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("QEC_TEST_OUT", str(out))  # sbatch passes the environment to the tasks
    monkeypatch.setattr(sys, "executable", str(fake_kiln_bin(tmp_path / "bin", TRAP_KILN) /
                                               "python"))
    backend = get_backend("slurm")
    r = request(batches=("b000", "b001"), bucket=str(tmp_path / "bucket"), sweep="sl-cancel",
                cpus="2")
    result = backend.launch(r)
    array = result.job_ids["b000"].split("_")[0]
    assert result.job_ids == {"b000": f"{array}_0", "b001": f"{array}_1"}
    try:
        slurm_cluster.wait_for(
            lambda: all((out / f"task-{k}.marker").exists() for k in (0, 1)), 30,
            "both tasks to start")
        states = backend.job_states(r.bucket_url, r.sweep)
        assert {b: s.state for b, s in states.items()} == {"b000": "RUNNING", "b001": "RUNNING"}
        for k, batch in enumerate(("b000", "b001")):
            argv = (out / f"task-{k}.argv").read_text().splitlines()
            assert argv == ["run-batch", "--bucket", r.bucket_url, "--sweep", "sl-cancel",
                            "--batches", "b000,b001", "--index", str(k), "--sync-seconds", "30",
                            "--processes", "2"], batch
            assert (out / f"task-{k}.cpus").read_text().strip() == "2"

        assert backend.cancel(r.bucket_url, r.sweep) == [array]
        slurm_cluster.wait_for(
            lambda: all((out / f"task-{k}.marker").read_text().split() == ["start", "TERM"]
                        for k in (0, 1)), 60, "SIGTERM to both tasks' (exec'd) qec-kiln")
        slurm_cluster.wait_for(
            lambda: {s.state for s in backend.job_states(r.bucket_url, r.sweep).values()}
            == {"CANCELLED"}, 15, "both tasks CANCELLED")
        assert backend.cancel(r.bucket_url, r.sweep) == []
        logs = sorted(p.name for p in (sl.state_dir("sl-cancel") / "logs").iterdir())
        assert logs == [f"{array}_0.out", f"{array}_1.out"]
        assert "array task 1 of job" in (sl.state_dir("sl-cancel") / "logs" /
                                         f"{array}_1.out").read_text()
    finally:
        slurm_cluster.run(["scancel", array], check=False)


@pytest.mark.slow
@pytest.mark.slurm
def test_sweep_end_to_end_on_slurm(slurm_cluster, tmp_path):
    """`qec-kiln launch --backend slurm`, the real run-batch in each array task, then merge."""
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001, 0.01))
    bucket = tmp_path / "bucket"
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    args = ("launch", str(circuits), "--backend", "slurm", "--max-shots", "5000",
            "--max-errors", "50", "--bucket", str(bucket), "--name", "sl-e2e", "--jobs", "2",
            "--processes", "1", "--sync-seconds", "1")
    t0 = time.monotonic()
    r = run_kiln(*args, env=env, check=True)
    assert "submitted Slurm job array" in r.stderr, r.stderr
    array = r.stderr.split("submitted Slurm job array ")[1].split()[0]

    def finished() -> bool:
        states = slurm_cluster.states(array)
        return len(states) == 2 and set(states.values()) <= {"COMPLETED", "FAILED", "CANCELLED"}

    slurm_cluster.wait_for(finished, 120, "the sweep's array to finish")
    logs = sl.state_dir("sl-e2e") / "logs"
    assert slurm_cluster.states(array) == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED"}, (
        "\n".join(p.read_text() for p in sorted(logs.glob("*.out"))))
    merged = tmp_path / "merged.csv"
    m = run_kiln("merge", "--bucket", str(bucket), "--out", str(merged), check=True)
    assert "2 of 2 task(s) reached" in m.stdout
    stats = sinter.read_stats_from_csv_files(str(merged))
    assert len(stats) == 2 and all(s.shots >= 5000 or s.errors >= 50 for s in stats)
    # Finished and known to slurmctld (MinJobAge): status sees them, relaunch starts nothing.
    s = run_kiln("status", "--bucket", str(bucket), "--sweep", "sl-e2e", "--json", env=env,
                 check=True)
    assert "sl-e2e" in s.stdout
    again = run_kiln(*args, env=env, check=True)
    assert "nothing to launch" in again.stderr
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
@pytest.mark.slurm
def test_requeued_task_resumes_from_its_fragment(slurm_cluster, tmp_path):
    """`scontrol requeue` of a running task: run-batch gets SIGTERM and uploads, Slurm starts the
    task again from the top (SLURM_RESTART_COUNT=1) and run-batch resumes from the fragment;
    `qec-kiln cancel` then stops it with another upload."""
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(5,), noises=(0.001,))
    bucket = tmp_path / "bucket"
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    r = run_kiln("launch", str(circuits), "--backend", "slurm", "--max-shots", "200_000_000",
                 "--max-errors", "1_000_000", "--bucket", str(bucket), "--name", "sl-requeue",
                 "--jobs", "1", "--processes", "1", "--sync-seconds", "1", env=env, check=True)
    array = r.stderr.split("submitted Slurm job array ")[1].split()[0]
    task = f"{array}_0"
    fragment = bucket / "sl-requeue" / "fragments" / "b000.csv"
    log = sl.state_dir("sl-requeue") / "logs" / f"{task}.out"

    def shots() -> int:
        if not fragment.exists():
            return 0
        return sum(s.shots for s in sinter.read_stats_from_csv_files(str(fragment)))

    try:
        slurm_cluster.wait_for(lambda: shots() > 0, 60, "a first uploaded row")
        slurm_cluster.run(["scontrol", "requeue", task])
        slurm_cluster.wait_for(lambda: "final upload done" in log.read_text(), 30,
                               "run-batch's upload on SIGTERM")
        assert "received SIGTERM" in log.read_text()
        before = shots()  # the task starts again only after cred_expire (10 s here)
        slurm_cluster.wait_for(lambda: "restored" in log.read_text(), 60,
                               "the requeued task to restore its fragment")
        text = log.read_text()
        assert f"array task 0 of job {array}, restart 1" in text, text
        restored = int(text.split("restored ")[1].split()[2].strip("("))
        assert restored == before > 0  # it resumes exactly what was uploaded
        c = run_kiln("cancel", "--bucket", str(bucket), "--sweep", "sl-requeue", env=env,
                     check=True)
        assert array in c.stdout + c.stderr
        slurm_cluster.wait_for(lambda: slurm_cluster.states(array) == {task: "CANCELLED"}, 30,
                               "the task to be cancelled")
        assert log.read_text().count("final upload done") == 2
        assert shots() >= before
    finally:
        slurm_cluster.run(["scancel", array], check=False)


@pytest.mark.slow
@pytest.mark.slurm
def test_killed_task_requeued_reaches_its_target_without_double_counting(slurm_cluster, tmp_path):
    """A preempted node, Slurm style: SIGKILL of a running array task's run-batch (`scancel --batch
    --signal=KILL`: plain `scancel --signal=KILL` is a cancel that sends SIGTERM first, so no chance
    to upload here), then `scontrol requeue`; the rerun resumes from the last synced fragment, finishes,
    and the merged row has exactly max_shots: nothing lost beyond the sync period, nothing twice."""
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(7,), noises=(0.005,))
    bucket = tmp_path / "bucket"
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    max_shots = 800_000
    r = run_kiln("launch", str(circuits), "--backend", "slurm", "--max-shots", str(max_shots),
                 "--max-errors", "100_000_000", "--bucket", str(bucket), "--name", "sl-kill",
                 "--jobs", "1", "--processes", "1", "--sync-seconds", "1", env=env, check=True)
    array = r.stderr.split("submitted Slurm job array ")[1].split()[0]
    task = f"{array}_0"
    fragment = bucket / "sl-kill" / "fragments" / "b000.csv"
    log = sl.state_dir("sl-kill") / "logs" / f"{task}.out"

    def rows() -> int:
        return fragment.read_bytes().count(b"\n") - 1 if fragment.exists() else 0

    try:
        slurm_cluster.wait_for(lambda: rows() >= 2, 90, "two uploaded rows")
        slurm_cluster.run(["scancel", "--batch", "--signal=KILL", task])
        slurm_cluster.wait_for(lambda: slurm_cluster.states(array).get(task) != "RUNNING", 30,
                               "the killed task to stop")
        at_kill = fragment.read_bytes()
        assert "received SIGTERM" not in log.read_text()  # KILL: no graceful upload
        slurm_cluster.run(["scontrol", "requeue", task])
        slurm_cluster.wait_for(lambda: slurm_cluster.states(array).get(task) == "COMPLETED", 180,
                               "the requeued task to finish")
        text = log.read_text()
        assert "restored" in text and "batch finished" in text, text
        final = fragment.read_bytes()
        assert final.startswith(at_kill)  # only ever extended
        merged = tmp_path / "merged.csv"
        m = run_kiln("merge", "--bucket", str(bucket), "--out", str(merged), check=True)
        assert "1 of 1 task(s) reached" in m.stdout
        [stat] = sinter.read_stats_from_csv_files(str(merged))
        assert stat.shots == max_shots
    finally:
        slurm_cluster.run(["scancel", array], check=False)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_eight_batches_on_two_workers_throttle_requeue_and_exact_merge(slurm_cluster, tmp_path):
    """B = 8 batches, K = 2 workers: one array `--array=0-7%2`. squeue never shows more than 2
    tasks running (the cluster has room for 4 one-CPU tasks), tasks start in index order (longest
    batch first), one task is SIGKILLed and requeued, and the merge has exactly max_shots."""
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3, 5),
                                      noises=(0.001, 0.003, 0.005, 0.01))
    bucket = tmp_path / "bucket"
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    max_shots = 300_000
    r = run_kiln("launch", str(circuits), "--backend", "slurm", "--max-shots", str(max_shots),
                 "--max-errors", "100_000_000", "--bucket", str(bucket), "--name", "sl-k2",
                 "--jobs", "8", "--workers", "2", "--processes", "1", "--sync-seconds", "1",
                 env=env, check=True)
    array = r.stderr.split("submitted Slurm job array ")[1].split()[0]
    assert "#SBATCH --array=0-7%2" in (sl.state_dir("sl-k2") / "job.sbatch").read_text()
    fragment = bucket / "sl-k2" / "fragments" / "b000.csv"  # b000: the longest, task 0
    task0 = f"{array}_0"
    most, first_seen, killed = 0, [], False
    # Each task seen COMPLETED (task 0 only after its requeue: it is killed while RUNNING).
    # Collected over the looks, not read at the end: slurmctld forgets a finished task after
    # MinJobAge (30 s), and on a loaded machine the array's first and last ends are further apart.
    completed: set[str] = set()

    def step() -> bool:
        """One look at the array (kill task 0 once it uploaded); True once all 8 completed."""
        nonlocal most, killed
        states = slurm_cluster.states(array)
        completed.update(t for t, s in states.items() if s == "COMPLETED")
        running = sorted(t for t, s in states.items() if s == "RUNNING")
        most = max(most, len(running))
        first_seen.extend([t for t in running if t not in first_seen])
        if (not killed and task0 in running and fragment.exists()
                and fragment.read_bytes().count(b"\n") >= 2):
            slurm_cluster.run(["scancel", "--batch", "--signal=KILL", task0])
            slurm_cluster.wait_for(lambda: slurm_cluster.states(array).get(task0)
                                   != "RUNNING", 30, "the killed task to stop")
            slurm_cluster.run(["scontrol", "requeue", task0])
            killed = True
        return killed and len(completed) == 8

    try:
        # No failure at the time limit: the asserts below say what did not happen.
        wait_until(step, 300, "the array to finish", interval=0.3, fail=False)
        assert killed, "task 0 never uploaded two rows while running"
        assert completed == {f"{array}_{k}" for k in range(8)}, slurm_cluster.states(array)
        assert most == 2, f"at most {most} tasks ran at once (want the throttle's 2)"
        assert first_seen[:2] == [f"{array}_0", f"{array}_1"], first_seen
        log = (sl.state_dir("sl-k2") / "logs" / f"{task0}.out").read_text()
        assert "restart 1" in log and "restored" in log, log
        merged = tmp_path / "merged.csv"
        m = run_kiln("merge", "--bucket", str(bucket), "--out", str(merged), check=True)
        assert "8 of 8 task(s) reached" in m.stdout
        stats = sinter.read_stats_from_csv_files(str(merged))
        assert len(stats) == 8 and all(s.shots == max_shots for s in stats)
    finally:
        slurm_cluster.run(["scancel", array], check=False)

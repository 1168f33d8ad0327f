"""What a person sees and does at the command line (issue 13): signals to `launch`, live progress,
sinter's `--circuits` habits, limits on flags, cancel, clean, and quiet surprises made loud."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import sinter
from kiln_helpers import wait_until, write_surface_circuits

from qec_kiln._backends.local.state import StateFolder
from qec_kiln._command._main import parse_args
from qec_kiln._errors import Exit


def _popen_launch(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qec_kiln", "launch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def _wait_for_rows(folder: pathlib.Path, timeout: float = 90) -> None:
    """Until some resume file under ``folder`` has a row beyond its header."""
    wait_until(lambda: any(f.read_bytes().count(b"\n") >= 2 for f in folder.rglob("resume.csv")),
               timeout, f"a batch to make progress under {folder}")


def _survivors(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes that mention ``marker``."""
    out = []
    for p in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            stat = (p / "stat").read_text()
        except OSError:
            continue
        if marker in cmd and not stat[stat.rindex(")") + 2:].startswith("Z"):
            out.append(cmd.replace("\0", " "))
    return out


@pytest.fixture
def slow_sweep(tmp_path):
    """Two circuits that take ~10 s each on one core at 600,000 shots."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.003, 0.005))
    return circuits, ["--max-shots", "600_000", "--max-errors", "1_000_000_000", "--jobs", "2",
                      "--workers", "2", "--processes", "1", "--sync-seconds", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminating_signal_stops_every_batch_cleanly_and_a_relaunch_is_exact(
        tmp_path, slow_sweep, kiln, kiln_isolated, signum):
    circuits, flags = slow_sweep
    bucket = tmp_path / "bucket"
    proc = _popen_launch(str(circuits), "--bucket", str(bucket), "--name", "sig", *flags)
    _wait_for_rows(kiln_isolated / "home" / "local")
    proc.send_signal(signum)  # to the launcher only, as a closed terminal or `kill` would
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert signal.Signals(signum).name in err and "failed" not in err
    time.sleep(0.5)
    assert not _survivors(str(bucket)), "a batch (run-batch or sinter) outlived the launcher"
    # Its work was uploaded: the relaunch shows only the work left, then finishes exactly.
    r = kiln("launch", str(circuits), "--bucket", str(bucket), "--name", "sig", *flags, check=True)
    assert "remaining:" in r.stdout and "of CPU time planned" in r.stdout
    out = tmp_path / "merged.csv"
    kiln("merge", "--bucket", str(bucket), "--out", str(out), check=True)
    stats = sinter.read_stats_from_csv_files(str(out))
    assert [s.shots for s in stats] == [600_000, 600_000]


@pytest.mark.slow
def test_cancel_without_sweep_stops_the_only_sweep_and_the_launcher_says_cancelled(
        tmp_path, slow_sweep, kiln, kiln_isolated):
    circuits, flags = slow_sweep
    bucket = tmp_path / "bucket"
    proc = _popen_launch(str(circuits), "--bucket", str(bucket), "--name", "cx", *flags)
    _wait_for_rows(kiln_isolated / "home" / "local")
    r = kiln("cancel", "--bucket", str(bucket), check=True)  # no --sweep: the bucket's only one
    assert "cancelled 2 job(s) of sweep cx" in r.stdout
    _, err = proc.communicate(timeout=120)
    assert "2 batch(es) cancelled" in err and "failed" not in err, err
    assert proc.returncode == Exit.CANCELLED  # 4: not 130, which is Ctrl-C
    r = kiln("status", "--bucket", str(bucket), "--json", check=True)
    assert {b["state"] for b in json.loads(r.stdout)[0]["batches"]} == {"CANCELLED"}, r.stdout


@pytest.mark.slow
def test_cancel_stops_the_waiting_batches_of_a_local_queue_too(tmp_path, kiln, kiln_isolated):
    """Two workers, three batches: one cancel ends the launch; the waiting one never starts.
    (One worker runs its whole queue in one run-batch: nothing waits.)"""
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.003, 0.004, 0.005))
    bucket = tmp_path / "bucket"
    proc = _popen_launch(str(circuits), "--bucket", str(bucket), "--name", "q", "--jobs", "3",
                         "--workers", "2", "--processes", "1", "--sync-seconds", "1",
                         "--max-shots", "900_000", "--max-errors", "1_000_000_000")
    _wait_for_rows(kiln_isolated / "home" / "local")
    r = kiln("cancel", "--bucket", str(bucket), "--sweep", "q", check=True)
    assert "cancelled 3 job(s) of sweep q: b000, b001, b002" in r.stdout, r.stdout
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == Exit.CANCELLED, err
    assert "3 batch(es) cancelled" in err and "never started" in err and "failed" not in err, err
    time.sleep(0.5)
    assert not _survivors(str(bucket)), "a batch outlived the cancel"
    started = sorted(p.stem for p in (bucket / "q" / "fragments").glob("*.csv"))
    waited = re.search(r"\((b\d+) never started\)", err)
    assert waited and waited[1] not in started and started, (started, err)  # it never ran


@pytest.mark.slow
def test_a_bare_cancel_of_a_bucket_with_several_sweeps_names_them_and_stops_nothing(
        tmp_path, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001,))
    bucket = tmp_path / "bucket"
    for name, shots in (("one", "200"), ("two", "400")):  # "two" tops "one" up to 400 shots
        kiln("launch", str(circuits), "--bucket", str(bucket), "--name", name, "--max-shots",
             shots, "--processes", "1", check=True)
    r = kiln("cancel", "--bucket", str(bucket))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: {bucket} holds 2 sweeps (one, two): give --sweep NAME, "
                                "or --all to cancel every one"), r.stderr
    r = kiln("cancel", "--bucket", str(bucket), "--all", check=True)
    assert "no running job of sweep one found" in r.stdout
    assert "no running job of sweep two found" in r.stdout


@pytest.mark.slow
def test_progress_lines_without_a_terminal_and_status_reads_local_resume_files(
        tmp_path, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.003,))
    bucket = tmp_path / "bucket"
    r = kiln("launch", str(circuits), "--bucket", str(bucket), "--name", "p", "--jobs", "2",
             "--max-shots", "300_000", "--max-errors", "1_000_000_000",
             env={"QEC_KILN_PROGRESS_SECONDS": "0.5"}, check=True)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("progress:")]
    assert len(lines) >= 2, r.stderr
    assert "ETA" in lines[0] and "/s)" in lines[0] and "errors" in lines[0]
    assert any(" b000 " in ln or "; b00" in ln for ln in lines[:-1])  # per running batch
    assert lines[-1].startswith("progress: 2/2 batch(es) ended, 600,000 shots")
    # A finished batch's local work folder is removed.
    state = StateFolder.of(str(bucket.resolve()), "p").root
    assert not (state / "work").exists()

    # status prefers a local resume file holding more than the (older) fragment in the bucket.
    frag = bucket / "p" / "fragments" / "b000.csv"
    data = frag.read_bytes()
    frag.write_bytes(data.split(b"\n", 1)[0] + b"\n")  # the bucket's copy: header only
    resume = state / "work" / "p" / "b000" / "resume.csv"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(data)
    r = kiln("status", "--bucket", str(bucket), "--sweep", "p", "--json", check=True)
    b000 = json.loads(r.stdout)[0]["batches"][0]
    assert b000["shots"] == 300_000


@pytest.mark.slow
def test_circuits_as_in_sinter_collect(tmp_path, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.001,))
    files = sorted(str(p) for p in circuits.glob("*.stim"))
    common = ["--bucket", str(tmp_path / "b"), "--max-shots", "1000", "--json"]
    a = kiln("plan", "--circuits", *files, *common, check=True)
    b = kiln("plan", "--circuits", *reversed(files), *common, check=True)
    c = kiln("plan", str(circuits / "d=*.stim"), *common, check=True)  # a glob, unexpanded
    d = kiln("plan", str(circuits), *common, check=True)
    names = {json.loads(x.stdout)["sweep"] for x in (a, b, c, d)}
    assert len(names) == 1 and names.pop().startswith("c-")  # stable, named after the folder
    assert sum(len(x["shards"]) for x in json.loads(a.stdout)["batches"]) == 2
    r = kiln("plan", "--circuits", files[0], str(tmp_path / "nothing.stim"), *common)
    assert r.returncode == 2 and "nothing.stim: no such file" in r.stderr
    r = kiln("plan", files[0], "--processes", "auto", "--sinter-option",
             "--count_observable_error_combos", *common)
    assert r.returncode == 0, r.stderr
    from qec_kiln._command._base import normalise

    assert normalise(["--sinter-option", "--max_batch_size=9"], {"--sinter-option"}) == [
        "--sinter-option=--max_batch_size=9"]


@pytest.mark.slow  # four CLI runs; test_bad_inputs.py keeps flag errors in the fast loop
def test_flag_limits_are_one_line_errors(tmp_path, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001,))
    for flags, word in [(["--sync-seconds", "1e10"], "--sync-seconds"),
                        (["--processes", "100000"], "--processes")]:
        r = kiln("launch", str(circuits), "--bucket", str(tmp_path / "b"), *flags)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
        assert word in r.stderr
    r = kiln("run-batch", "--bucket", str(tmp_path / "b"), "--sweep", "x", "--batch", "b000",
             "--sync-seconds", "1e10")
    assert r.returncode == 2 and "one day" in r.stderr
    # Remote nodes may have many cores: Slurm takes it (and warns about a local bucket path).
    r = kiln("launch", str(circuits), "--bucket", str(tmp_path / "b"), "--backend", "slurm",
             "--processes", "256", "--dry-run", check=True)
    assert "every Slurm node must see it" in r.stderr


@pytest.mark.slow
def test_quiet_surprises_are_said(tmp_path, kiln, kiln_isolated):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001, 0.01))
    bucket = str(tmp_path / "b")
    kiln("launch", str(circuits), "--bucket", bucket, "--name", "q", "--jobs", "1",
         "--max-shots", "2000", check=True)
    r = kiln("plan", str(circuits), "--bucket", bucket, "--name", "q", "--jobs", "2",
             "--max-shots", "2000", check=True)
    assert "--jobs 2 ignored" in r.stderr and "--name" in r.stderr
    help_text = " ".join(kiln("launch", "--help", check=True).stdout.split())
    assert "circuit x decoder" in help_text and "slurm per array task" in help_text
    # BrokenPipe when the reader leaves: no traceback.
    p = subprocess.Popen([sys.executable, "-m", "qec_kiln", "status", "--bucket", bucket,
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) in (0, 141) and "Traceback" not in err, err
    p = subprocess.Popen([sys.executable, "-m", "qec_kiln", "plan", str(circuits), "--bucket",
                          bucket, "--name", "q", "--max-shots", "2000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader leaves before the plan (rich's table) is printed
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and "Traceback" not in err, err  # as a plain print's
    # clean removes old local state (here: everything, --older-than 0) under QEC_KILN_HOME.
    home = kiln_isolated / "home"
    assert any((home / "local").iterdir())
    r = kiln("clean", "--older-than", "0", check=True)
    assert "removed 1 item(s) of local state" in r.stdout
    assert not any((home / "local").iterdir())


def test_clean_removes_old_cached_fragments_and_keeps_fresh_ones(tmp_path):
    import os as os_
    import time as time_

    from qec_kiln._command._main_clean import clean_state

    cache = tmp_path / "bucket-cache"
    cache.mkdir()
    old, new = cache / "a", cache / "b"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    week_ago = time_.time() - 8 * 86400
    os_.utime(old, (week_ago, week_ago))
    assert clean_state(tmp_path, older_than_days=7, dry_run=True) == [old] and old.exists()
    assert clean_state(tmp_path, older_than_days=7) == [old]
    assert not old.exists() and new.exists()


def test_parser_takes_circuits_option_and_positional_alike():
    a = parse_args(["plan", "--circuits", "x.stim", "y.stim", "--jobs", "2"])
    assert a.circuits_opt == ["x.stim", "y.stim"] and a.jobs == 2


@pytest.mark.slow  # a real launch: ~3 s
def test_stale_cancel_and_launch_records_change_nothing(tmp_path, kiln):
    """A `sweep.cancel` written before a launch began does not stop it, and a record of a
    launch that is gone (or a pid now someone else's) is not reported by cancel."""
    import json as json_

    from qec_kiln._backends import get_backend
    from qec_kiln._storage import parse_url

    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001,))
    bucket = tmp_path / "bucket"
    state = StateFolder.of(parse_url(str(bucket)).url, "st").root
    state.mkdir(parents=True)
    (state / "sweep.cancel").write_text("1.0")  # a cancel of long ago
    (state / f"launcher-{os.getpid()}.json").write_text(  # this pid, but another start time
        json_.dumps({"pid": os.getpid(), "started": 1, "waiting": ["b007"]}))
    (state / "launcher-999999999.json").write_text(
        json_.dumps({"pid": 999999999, "started": 5, "waiting": ["b008"]}))
    assert get_backend("local").cancel(parse_url(str(bucket)).url, "st") == []
    (state / "sweep.cancel").write_text("1.0")
    r = kiln("launch", str(circuits), "--bucket", str(bucket), "--name", "st", "--max-shots",
             "500", "--processes", "1", check=True)
    assert "all 1 batch(es) finished" in r.stdout + r.stderr
    assert (state / "b000.exit").read_text() == "0"  # the launch kept its records right here

"""Forked children (``_node/processes.py: fork_call``) and sinter started in a fork: the same
``sinter collect`` rows as the command, its exit codes, and the command where forking is off."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from kiln_helpers import write_surface_circuits

from qec_kiln._node.processes import Forked, fork_call


def test_fork_call_gives_the_exit_code_output_and_session_of_a_command(tmp_path):
    out = tmp_path / "out.log"
    with open(out, "ab") as f:
        ok = fork_call(lambda: print("hello", os.getsid(0) == os.getpid(), os.getcwd()) or 7,
                       out=f.fileno(), cwd=tmp_path, env={"KILN_TEST_X": "1"})
        exits = fork_call(lambda: sys.exit(3), out=f.fileno())
        raises = fork_call(lambda: 1 / 0, out=f.fileno())
    assert isinstance(ok, Forked)
    assert (ok.wait(timeout=30), exits.wait(), raises.wait(timeout=30)) == (7, 3, 1)
    assert ok.poll() == 7
    text = out.read_text()
    assert f"hello True {tmp_path}" in text  # its own session, in cwd
    assert "ZeroDivisionError" in text  # the traceback, in the child's output
    assert "KILN_TEST_X" not in os.environ


def test_wait_with_a_timeout_raises_while_the_child_runs(tmp_path):
    import time

    with open(tmp_path / "o", "ab") as f:
        child = fork_call(lambda: time.sleep(30), out=f.fileno())
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    os.kill(child.pid, 9)
    assert child.wait(timeout=10) == -9


@pytest.mark.parametrize("fork", ["1", "0"])
def test_sinter_started_in_a_fork_writes_the_rows_the_command_writes(tmp_path, fork):
    """In a process with sinter imported and no other thread, start_sinter forks sinter's own
    main (no new interpreter); with QEC_KILN_FORK=0 it runs the command. Both take exactly the
    shots asked, in the same resume file format, and name the same tasks."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001, 0.003))
    paths = sorted(circuits.glob("*.stim"))
    script = textwrap.dedent(f"""
        import pathlib, sys
        import sinter  # what a forked local run-batch has already
        from qec_kiln._node.processes import Forked
        from qec_kiln._node.sinter_cmd import sinter_collect_argv, start_sinter
        work = pathlib.Path({str(tmp_path / ("w" + fork))!r}); work.mkdir()
        argv = sinter_collect_argv([pathlib.Path(p) for p in {list(map(str, paths))!r}],
            decoders=["pymatching"], max_shots=2000, max_errors=10**6, processes=1,
            resume_path=work / "r.csv")
        with open(work / "sinter.log", "ab") as log:
            proc = start_sinter(argv, log.fileno(), work)
        print(type(proc).__name__, proc.wait())
    """)
    env = dict(os.environ, QEC_KILN_FORK=fork)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Forked" if fork == "1" else "Popen", "0"]
    import sinter

    rows = sinter.read_stats_from_csv_files(str(tmp_path / f"w{fork}" / "r.csv"))
    assert sorted(s.shots for s in rows) == [2000, 2000]
    assert {s.json_metadata["p"] for s in rows} == {0.001, 0.003}
    assert pathlib.Path(tmp_path / f"w{fork}" / "sinter.log").read_text() == ""  # --quiet, no error

"""The processes of a batch's sinter: its own process group, found by /proc and stopped whole
(sinter's workers outlive its main process when that is SIGKILLed)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import signal
import subprocess


def die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """Linux: SIGKILL sinter's main process when run-batch dies (PR_SET_PDEATHSIG).

    If run-batch died between the fork and the prctl, no signal will ever come: exit instead of
    running a sinter that no pgid file records (nothing would ever stop it).
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def pids_in_group(pgid: int) -> list[int]:
    pids = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid:
                pids.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def kill_stale_group(pgid_file: pathlib.Path) -> None:
    """SIGKILL what is left of an earlier sinter of this batch (its workers outlive its main process).

    The group is only killed when one of its processes runs in this batch's work folder (sinter is
    started there and its workers inherit it): after a reboot or a wrap of the pid counter the
    recorded pgid may belong to someone else's process group, even someone else's sinter.
    """
    try:
        pgid = int(pgid_file.read_text().strip())
    except (OSError, ValueError):
        return
    work = str(pgid_file.parent.resolve())
    for pid in pids_in_group(pgid):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd in (work, work + " (deleted)"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            break
    with contextlib.suppress(FileNotFoundError):
        pgid_file.unlink()


def stop_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGINT sinter's group (it flushes its resume file), then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)

"""Processes by their identity in /proc (state, start time, process group, command line), and a
batch's sinter as one process group, found and stopped whole (sinter's workers outlive its main
process when that is SIGKILLed). Used by run-batch and by the local backend.

    >>> me = os.getpid()
    >>> start_ticks(me) is not None and me in pids_in_group(os.getpgid(0))
    True
    >>> b"python" in b" ".join(command_line(me)).lower() or command_line(me) != []
    True
"""

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


def stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (field 3, the state, is ``[0]``); None when
    the process is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    """When a live process started (field 22, clock ticks since boot): with its pid it tells a
    process from a later one given the same pid. None when it is gone or a zombie."""
    fields = stat_fields(pid)
    if not fields or fields[0] == "Z":
        return None
    return int(fields[19])


def is_live(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] != "Z"


def command_line(pid: int) -> list[bytes]:
    """The process's argv ([] when it is gone)."""
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def pids_in_group(pgid: int) -> list[int]:
    """Every process of process group ``pgid``."""
    pids = []
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit() and (fields := stat_fields(d.name)) and len(fields) > 2 \
                and fields[2] == str(pgid):
            pids.append(int(d.name))
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

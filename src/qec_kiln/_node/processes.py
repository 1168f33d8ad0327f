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
from collections.abc import Callable, Mapping


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


def stop_group(proc: subprocess.Popen | Forked, grace: float = 3.0) -> None:
    """SIGINT sinter's group (it flushes its resume file), then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def fork_is_safe() -> bool:
    """Whether this process may fork a child that goes on running Python (no other Python
    thread could hold a lock the child would need; ``QEC_KILN_FORK=0`` turns forking off)."""
    import threading

    return os.environ.get("QEC_KILN_FORK", "1") != "0" and threading.active_count() == 1


class Forked:
    """A forked child, with the part of :class:`subprocess.Popen` that run-batch and the local
    queue use (``pid``, ``returncode``, ``poll``, ``wait``)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost (as Popen says 0)
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            if self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:
                    self.returncode = 0
            return self.returncode
        import time

        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode


def fork_call(main: Callable[[], int | None], *, out: int, cwd: str | os.PathLike | None = None,
              env: Mapping[str, str] | None = None, die_with: int | None = None) -> Forked:
    """Run ``main()`` in a forked child in its own session (stdin from /dev/null, stdout and
    stderr to the file descriptor ``out``), as ``Popen(start_new_session=True)`` would run a
    command, without a new interpreter's start-up and imports. Its return value is the exit
    code. Call only when :func:`fork_is_safe`. ``die_with``: see :func:`die_with_parent`.
    """
    import sys

    for stream in (sys.stdout, sys.stderr):  # nothing of the parent's is written twice
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid:
        return Forked(pid)
    code = 1  # pragma: no cover - the child
    try:
        os.setsid()
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if die_with is not None:
            die_with_parent(die_with)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (whatever the
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 parent had there)
        if cwd is not None:
            os.chdir(cwd)
        if env:
            os.environ.update(env)
        result = main()
        code = result if isinstance(result, int) else 0
    except SystemExit as ex:  # as the interpreter ends: a code, or a message and 1
        if ex.code is not None and not isinstance(ex.code, int):
            print(ex.code, file=sys.stderr)
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports everything, then exits
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

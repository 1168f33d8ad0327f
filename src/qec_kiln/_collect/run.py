"""Running a call's sweep while its caller iterates: the local backend's :func:`qec_kiln.launch`
runs the batches before it returns, so it runs in a forked child (its own main thread: signal
handlers, and run-batch and sinter forked without a new interpreter), or in a thread where this
process cannot fork safely; a remote backend's launch submits and returns, in the caller's
thread. Either way the caller hears of it as events (dicts) through a pipe:
``{"sweep", "bucket"}`` once the plan is stored, then ``{"end": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from qec_kiln._command._main_launch import LaunchResult, launch
from qec_kiln._errors import KilnError, Log


def _end(result: LaunchResult) -> dict[str, Any]:
    return {"end": {"sweep": result.sweep, "bucket": result.bucket, "failed": result.failed,
                    "cancelled": result.cancelled, "interrupted": result.interrupted,
                    "launched": result.launched, "message": result.message,
                    "tasks": [[t.get("circuit"), t.get("decoder"), t.get("strong_id")]
                              for t in result.plan.manifest.tasks]}}


def _error(ex: BaseException) -> dict[str, Any]:
    return {"error": {"type": type(ex).__name__, "message": str(ex)}}


def raise_error(event: dict[str, Any]) -> None:
    """Raise the error a launch reported, as the type it had where sinter raises the same."""
    err = event["error"]
    kind = {"ValueError": ValueError, "KeyboardInterrupt": KeyboardInterrupt}.get(err["type"])
    if kind is not None:
        raise kind(err["message"])
    raise KilnError(err["message"] if err["type"] == "KilnError" else
                    f"{err['type']}: {err['message']}")


class Launch:
    """One launch of a call's sweep, started by :meth:`start`; :meth:`events` waits for the
    next events, :meth:`finished` says whether the launch returned."""

    def __init__(self, folder: Any, settings: dict[str, Any], log: Log | None,
                 cpu_ids: tuple[int, ...] | None, local: bool):
        self.folder, self.settings, self.log = folder, settings, log
        self.cpu_ids, self.local = cpu_ids, local
        self.pid: int | None = None
        self.thread: threading.Thread | None = None
        self.finished = False
        self.sweep: str | None = None  # once the plan is stored
        self.old: dict[str, int] = {}  # its fragments' bytes then (an earlier launch's rows)
        self._buffer = b""
        self._read, self._write = os.pipe()

    def _send(self, event: dict[str, Any]) -> None:
        # os.write may write part of a large event (a sweep's tasks, its fragments' sizes)
        # once the pipe's buffer is nearly full: the rest follows, or the reader sees half a line.
        data = memoryview((json.dumps(event) + "\n").encode())
        while data:
            data = data[os.write(self._write, data):]

    def _launch(self) -> None:
        def before_start(prepared: Any, _todo: Any, _relaunch: Any) -> None:
            # What the fragments hold before anything starts: rows of an earlier launch.
            from qec_kiln._argtypes import DEFAULT_BUCKET
            from qec_kiln._collect.watch import fragment_sizes
            from qec_kiln._storage import open_bucket

            bucket = open_bucket(str(self.settings.get("bucket") or DEFAULT_BUCKET))
            self._send({"sweep": prepared.sweep, "old": fragment_sizes(bucket, prepared.manifest)})

        try:
            if self.cpu_ids is not None:  # the local backend splits this process's CPUs
                os.sched_setaffinity(0, self.cpu_ids)
            self._send(_end(launch(self.folder, log=self.log, before_start=before_start,
                                   **self.settings)))
        except (Exception, KeyboardInterrupt) as ex:  # the caller raises it
            self._send(_error(ex))

    def start(self) -> None:
        """Start the launch: forked or in a thread (local), here (remote: it only submits)."""
        from qec_kiln._node.processes import fork_is_safe

        if not self.local:
            self._launch()
            self.finished = True
            return
        if self.cpu_ids is not None and not hasattr(os, "sched_setaffinity"):
            raise KilnError("allowed_cpu_affinity_ids: this platform cannot set a process's "
                            "CPUs; leave it out")
        if fork_is_safe():
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    os.close(self._read)
                    self._launch()
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                    os._exit(0)
            self.pid = pid
            return
        # Another thread runs here (a notebook): forking could deadlock the child. A thread's
        # own CPU set (sched_setaffinity(0) in it) is what its children inherit.
        self.thread = threading.Thread(target=self._launch, name="kiln-collect", daemon=True)
        self.thread.start()

    def events(self, timeout: float) -> list[dict[str, Any]]:
        """The events that arrive within ``timeout`` seconds (at once when one is waiting)."""
        out: list[dict[str, Any]] = []
        ready, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        while ready:
            chunk = os.read(self._read, 65536)
            if not chunk:
                break
            self._buffer += chunk
            ready, _, _ = select.select([self._read], [], [], 0)
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            out.append(event)
            self.sweep = event.get("sweep", self.sweep)
            self.old = event.get("old", self.old)
            if "end" in event or "error" in event:
                self.finished = True
                self._reap()
        if not self.finished and self.pid is not None:  # a child that died without a word
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None
                self.finished = True
                out.append(_error(KilnError(
                    f"the launch process ended with {os.waitstatus_to_exitcode(status)} "
                    "before it reported; collect again to resume")))
        return out

    def _reap(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None
        if self.thread is not None:
            self.thread.join()

    def stop(self, cancel: Callable[[str], object]) -> None:
        """Stop the launch as ``qec-kiln cancel`` does (``cancel(sweep)``, once the sweep is
        stored; a forked launch still planning is stopped by SIGTERM), and wait for it: every
        complete line is kept, and the same call resumes."""
        cancelled = None
        started = self.pid is not None or self.thread is not None
        if started and not self.finished:
            self.events(0)  # a sweep stored meanwhile: cancel it rather than signal
        while started and not self.finished:
            if self.sweep is not None and cancelled != self.sweep:
                cancelled = self.sweep
                with contextlib.suppress(KilnError, OSError):
                    cancel(self.sweep)
            elif self.sweep is None and self.pid is not None and cancelled is None:
                cancelled = ""
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
            self.events(0.5)
        self.close()

    def close(self) -> None:
        self._reap()
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


__all__ = ["Launch", "raise_error"]

"""The local backend's launch: K slots taking batches, longest first, from one queue.

A slot starts the next waiting batch as soon as its batch exits (the launch waits on the
children's pidfds, not on a timer). With one slot (``together``) its whole queue goes to one
run-batch (``--all``), which runs batches that share no task in one sinter: one start-up and
one tail, as a plain ``sinter collect`` of the same work. ``qec-kiln cancel`` from another terminal writes
``sweep.cancel``: the queue starts no more batches and stops any it started meanwhile. Ctrl-C,
SIGTERM or SIGHUP stop every running batch the same way (run-batch uploads its last complete
lines first).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

from qec_kiln._atomic import atomic_write
from qec_kiln._backends.base import Submission
from qec_kiln._backends.local.state import StateFolder
from qec_kiln._errors import Log
from qec_kiln._node.processes import Forked, fork_call, fork_is_safe, start_ticks
from qec_kiln._node.runner import BATCH_EXIT
from qec_kiln._node.workers import Worker

#: How often the queue looks for a cancel record and redraws progress while nothing exits.
TICK_SECONDS = 0.2


class SlotQueue:
    """Runs ``batches`` on ``slots``; ``argv_for(batches, slot)`` is the command of batches
    started at once (one, or with ``together`` every waiting one)."""

    def __init__(self, state: StateFolder, batches: list[str], slots: list[Worker],
                 argv_for: Callable[[list[str], Worker], list[str]], say: Log,
                 together: bool = False):
        self.state, self.argv_for, self.say = state, argv_for, say
        self.together = together
        self.pending = list(batches)
        self.free = list(slots)  # idle slots; a finished run-batch gives its slot back
        self.slot_of: dict[int, Worker] = {}  # by run-batch pid
        self.running: dict[str, subprocess.Popen | Forked] = {}
        self.codes: dict[str, int] = {}
        self.shared: dict[str, bool] = {}  # run by a run-batch of several batches
        self.commands: list[list[str]] = []
        self.stopped: list[int] = []  # the terminating signal(s) this launch received
        self.never_started: list[str] = []  # waiting when `qec-kiln cancel` came
        self.began = time.time()  # a cancel recorded before this launch began does not stop it
        self.me = state.launcher(os.getpid())  # what `cancel` reads: who waits here
        self.my_start = start_ticks(os.getpid())

    # ------------------------------------------------------------------ what it shows

    def states(self) -> dict[str, str]:
        """Each batch: waiting, running, or how it ended (done, cancelled, failed, ...)."""
        out = {b: "waiting" for b in self.pending}
        out.update({b: "cancelled" for b in self.never_started})
        out.update({b: "running" for b in self.running})
        out.update({b: self.state.ended(b, c) for b, c in self.codes.items()})
        return out

    # ------------------------------------------------------------------ the loop

    def start_free(self) -> None:
        """Start waiting batches on the free slots (first before the live view starts its
        thread, so that they may be forked: see :func:`start_batch`)."""
        if not self.me.exists():  # the first call (then each start rewrites it)
            self._note_waiting()
        while self.pending and self.free and not self.stopped and not self._cancelled():
            self._start_next()

    def run(self, shown: Any) -> None:
        """Until every batch ended, or a signal came (``shown``: the live progress, or None)."""
        while (self.pending or self.running) and not self.stopped:
            self.start_free()
            self._wait_for_an_exit(TICK_SECONDS)
            self._cancelled()
            self._reap()
            if shown is not None:
                shown.update()
        if self.stopped:
            self._stop_all()

    def _note_waiting(self) -> None:  # rewritten only when the waiting batches change
        # replaced whole: `cancel` may read it at any moment
        atomic_write(self.me, json.dumps({"pid": os.getpid(), "started": self.my_start,
                                          "waiting": self.pending}).encode())

    def _cancelled(self) -> bool:
        """`qec-kiln cancel` of this sweep: start nothing more, and stop what runs (a batch
        started while the cancel looked for running ones is stopped here)."""
        try:
            if float(self.state.sweep_cancel.read_text()) < self.began:
                return False
        except (OSError, ValueError):
            return False
        if self.pending:
            self.never_started.extend(self.pending)
            self.pending.clear()
            self._note_waiting()
        for b, p in self.running.items():
            if not self.state.cancel(b).exists():
                self.state.cancel(b).write_text(str(time.time()))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        return True

    def _start_next(self) -> None:
        batches = self.pending[:] if self.together else self.pending[:1]
        del self.pending[:len(batches)]
        slot = self.free.pop(0)
        argv = self.argv_for(batches, slot)
        self.commands.append(argv)
        proc = start_batch(self.state, batches, argv, slot.env)
        self.slot_of[proc.pid] = slot
        for b in batches:
            self.running[b] = proc
            self.shared[b] = len(batches) > 1
        self._note_waiting()

    def _wait_for_an_exit(self, timeout: float) -> None:
        """Return when a running batch exits, or after ``timeout``."""
        fds = []
        try:
            for p in set(self.running.values()):
                with contextlib.suppress(OSError):
                    fds.append(os.pidfd_open(p.pid))
            if fds:
                select.select(fds, [], [], timeout)
            else:
                time.sleep(timeout)
        finally:
            for fd in fds:
                os.close(fd)

    def _reap(self) -> None:
        for b, p in list(self.running.items()):
            code = p.poll()
            if code is None:
                continue
            if self.shared.get(b):
                code = self._batch_code(b, code)
            self.codes[b] = code
            self.state.exit(b).write_text(str(code))
            del self.running[b]
            if p.pid in self.slot_of:  # once per run-batch, however many batches it ran
                self.free.append(self.slot_of.pop(p.pid))
            ended_as = self.state.ended(b, code)
            if ended_as == "failed":
                why = self.state.last_error(b)
                self.say(f"{b} failed (exit {code}){': ' + why if why else ''}; "
                         f"log: {self.state.out(b)}")
            elif ended_as == "elsewhere":
                self.say(f"{b}: run by another run-batch of this sweep (another launch); not "
                         "counted as failed")

    def _batch_code(self, batch: str, code: int) -> int:
        """How ``batch`` ended in a run-batch of several (its own record), else ``code``."""
        try:
            return int(self.state.work_dir(batch).joinpath(BATCH_EXIT).read_text())
        except (OSError, ValueError):
            return code

    def _stop_all(self) -> None:
        name = signal.Signals(self.stopped[0]).name
        self.say(f"{name}: stopping batches and uploading their resume files...")
        for p in set(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for b, p in self.running.items():
            try:
                self.codes[b] = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                self.codes[b] = p.wait()
            if self.shared.get(b):
                self.codes[b] = self._batch_code(b, self.codes[b])
            self.state.exit(b).write_text(str(self.codes[b]))
        self.running.clear()

    # ------------------------------------------------------------------ the outcome

    def submission(self, batch_ids: list[str]) -> Submission:
        """What ran, how each ended, and the one-line message; finished batches' work folders
        are removed (their fragments are final)."""
        ended = self.states()
        codes = self.codes
        failed = sorted(b for b in codes if ended[b] == "failed")
        cancelled = sorted([b for b in codes if ended[b] == "cancelled"] + self.never_started)
        elsewhere = sorted(b for b in codes if ended[b] == "elsewhere")
        for b in codes:
            if ended[b] == "done":
                shutil.rmtree(self.state.work_dir(b), ignore_errors=True)
        for empty in (self.state.work / self.state.sweep, self.state.work):
            with contextlib.suppress(OSError):
                empty.rmdir()
        if self.stopped:
            msg = "interrupted: run the same launch again to resume"
        elif failed:
            msg = f"{len(failed)} batch(es) failed: {', '.join(failed)}; logs in {self.state.root}"
            why = self.state.last_error(failed[0])
            if why:
                msg += f"; {failed[0]}: {why}"
            if cancelled:
                msg += f"; {len(cancelled)} cancelled (qec-kiln cancel): {', '.join(cancelled)}"
        elif cancelled:
            waited = (f" ({', '.join(self.never_started)} never started)"
                      if self.never_started else "")
            msg = (f"{len(cancelled)} batch(es) cancelled (qec-kiln cancel): "
                   f"{', '.join(cancelled)}{waited}; run the same launch again to resume")
        elif elsewhere:
            msg = (f"{len(codes) - len(elsewhere)} batch(es) finished; {len(elsewhere)} run by "
                   f"another launch of this sweep ({', '.join(elsewhere)}): see `qec-kiln status`")
        else:
            msg = f"all {len(codes)} batch(es) finished"
        return Submission(job_ids={b: str(b) for b in batch_ids}, commands=self.commands,
                          message=msg, failed=failed, interrupted=bool(self.stopped),
                          signal=self.stopped[0] if self.stopped else 0, cancelled=cancelled)


def start_batch(state: StateFolder, batches: list[str], argv: list[str],
                env: dict[str, str] | None = None) -> subprocess.Popen | Forked:
    """Start one run-batch (of one or more batches) in its own session, its output in the first
    batch's ``<b>.out`` (the others' are links to it), its pid recorded for each batch."""
    for batch in batches:
        for old in (state.exit(batch), state.cancel(batch), state.work_dir(batch) / BATCH_EXIT):
            old.unlink(missing_ok=True)
    for batch in batches[1:]:
        state.out(batch).unlink(missing_ok=True)
        state.out(batch).symlink_to(state.out(batches[0]).name)
    out = open(state.out(batches[0]), "ab")  # noqa: SIM115 (the child holds it)
    try:
        proc: subprocess.Popen | Forked
        if not env and argv[1:4] == ["-m", "qec_kiln", "run-batch"] and fork_is_safe():
            # A forked run-batch needs no interpreter start nor imports, and its sinter none
            # either (sinter is imported here already: see _node.sinter_cmd.start_sinter).
            # Not for a GPU worker: its CUDA_VISIBLE_DEVICES must be there before anything
            # in the process could have looked at the GPUs.
            def run_batch() -> int:  # pragma: no cover - runs in the child
                import runpy
                import sys

                sys.argv = [argv[0], *argv[3:]]  # `python -m qec_kiln run-batch ...`, as is
                runpy.run_module("qec_kiln", run_name="__main__", alter_sys=True)
                return 0  # (qec_kiln's __main__ exits with the command's code)

            proc = fork_call(run_batch, out=out.fileno(), env=env)
        else:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True,
                                    env={**os.environ, **env} if env else None)
    finally:
        out.close()
    record = json.dumps({"pid": proc.pid, "started": time.time(), "ticks": start_ticks(proc.pid)})
    for batch in batches:
        state.pid(batch).write_text(record)
    return proc


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP are recorded in ``stopped`` (the queue then
    stops every batch the way Ctrl-C does) instead of ending the process at once. Outside the
    main thread (``qec_kiln.iter_collect`` in a process that cannot fork) Python allows no
    handler: the caller's thread stops the launch through ``cancel`` instead."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stopped: list[int]):
        self.stopped = stopped
        self.old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for s in self.SIGNALS:
            self.old[s] = signal.signal(s, lambda signum, _frame: self.stopped.append(signum))
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def removed_at_exit(path: os.PathLike) -> Iterator[None]:
    """Remove ``path`` however the block ends (a launch's record must not outlive it)."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

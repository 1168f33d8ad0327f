"""The default backend: each batch is a local ``qec-kiln run-batch`` process.

``launch`` runs the batches in the foreground on ``--workers K`` slots (``--parallel`` is an alias;
default one slot with all the cores, or one per GPU with ``--gpus``): each slot takes the next
batch, longest first, when it is free. Each slot has its own CPUs (``_workers.worker_environments``
of this process's affinity mask), which run-batch hands to sinter (``--cpus-allowed``), so
concurrent sinters never share a core by accident. The terminal shows live shots, errors and an
ETA read from the batches' resume files. Ctrl-C, SIGTERM or SIGHUP sends SIGTERM to every batch,
which stops sinter and uploads the complete lines of its resume file, so the next ``launch``
resumes; a finished batch's local work folder is removed. ``status`` and
``cancel`` work from another terminal through the records in ``$QEC_KILN_HOME/local/<sweep>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from qec_kiln._argtypes import positive_int
from qec_kiln._backends.base import (
    Backend,
    BackendOptions,
    JobState,
    LaunchRequest,
    Submission,
    kiln_home,
    quote_argv,
)
from qec_kiln._errors import Exit
from qec_kiln._node.workers import Worker, format_cpus, gpu_ids, machine_cpus, worker_environments
from qec_kiln._planning.capacity import Capacity
from qec_kiln._report.failures import last_error_line


def _state_dir(bucket_url: str, sweep: str) -> pathlib.Path:
    """``$QEC_KILN_HOME/local/<sweep>-<8 hex of the bucket URL>``: one sweep name in two buckets
    gets two folders (job records and work files never mix)."""
    digest = hashlib.sha256(bucket_url.encode()).hexdigest()[:8]
    return kiln_home() / "local" / f"{sweep}-{digest}"


def split_cores(num_batches: int, workers: int | None, processes: int | None,
                gpus: str | None = None) -> tuple[int, int]:
    """(batches at once, sinter processes each): K slots (default one, or one per GPU), each with
    its share of this process's CPUs.

    >>> split_cores(10, None, None)[0]
    1
    >>> split_cores(3, 2, 4)
    (2, 4)
    """
    workers_ = slot_workers(num_batches, workers, gpus)
    return len(workers_), processes or len(workers_[0].cpus)


def slot_workers(num_batches: int, workers: int | None, gpus: str | None = None) -> list[Worker]:
    """The local slots: K workers (at most one per batch), each with disjoint CPUs and GPUs."""
    gpu_list = gpu_ids(gpus)
    k = workers or max(1, len(gpu_list))
    k = max(1, min(k, num_batches))
    return worker_environments(machine_cpus(), gpu_list, k)


@dataclasses.dataclass(frozen=True)
class LocalOptions(BackendOptions):
    """The local backend's options: the common ones; ``workers`` is how many batches run at once
    (``parallel`` is an alias of it)."""


class LocalBackend(Backend):
    """Batches as local processes on K slots, each with its own CPUs.

    >>> b = LocalBackend()
    >>> b.capacity(b.options({"processes": 1}), 5).surely_processes
    1
    >>> b.capacity(b.options({"parallel": 2}), 5).slots, b.capacity(b.options(), 5).slots
    (2, 1)
    """

    name = "local"
    options_type = LocalOptions
    startup_seconds = 2.0
    decoders_run_here = True
    queue_workers = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("local")
        g.add_argument("--parallel", type=positive_int, dest="workers", default=argparse.SUPPRESS,
                       help="the same as --workers: batches at once (default 1 with all cores)")

    @classmethod
    def options(cls, value: BackendOptions | Mapping[str, Any] | None = None) -> LocalOptions:
        if isinstance(value, Mapping) and "parallel" in value:  # the old name of workers
            value = dict(value)
            value.setdefault("workers", value.pop("parallel"))
        opts = super().options(value)
        assert isinstance(opts, LocalOptions)
        return opts

    def capacity(self, options: BackendOptions, n_batches: int) -> Capacity:
        """K slots (default one with every core, or one per GPU), the cores split among them."""
        opts = self.options(options)
        slots, procs = split_cores(max(1, n_batches), opts.workers, opts.processes, opts.gpus)
        return Capacity(processes=procs, startup_seconds=self.startup_seconds, slots=slots,
                        workers=opts.workers or max(1, len(gpu_ids(opts.gpus))),
                        min_processes=opts.processes or split_cores(
                            10**9, opts.workers, opts.processes, opts.gpus)[1],
                        decoders_run_here=True)

    def _argv(self, request: LaunchRequest, batch: str, worker: Worker) -> list[str]:
        argv = request.run_batch_argv(batch_id=batch)
        argv = [sys.executable, "-m", "qec_kiln"] + argv[1:]
        if "--processes" not in argv:
            argv += ["--processes", str(len(worker.cpus))]
        argv += ["--cpus-allowed", format_cpus(worker.cpus)]
        argv += ["--work-dir", str(_state_dir(request.bucket_url, request.sweep) / "work")]
        return argv

    def _workers(self, request: LaunchRequest) -> list[Worker]:
        opts = self.options(request.options)
        return slot_workers(max(1, len(request.batch_ids)), opts.workers, opts.gpus)

    def describe(self, request: LaunchRequest) -> str:
        workers = self._workers(request)
        opts = self.options(request.options)
        lines = [f"local backend: {len(request.batch_ids)} batch(es) on {len(workers)} worker(s), "
                 "each taking the next batch when free:"]
        for w in workers:
            env = "".join(f" {k}={v}" for k, v in w.env.items())
            lines.append(f"  worker {w.index}: CPUs {format_cpus(w.cpus)}, sinter --processes "
                         f"{opts.processes or len(w.cpus)}{env}")
        lines.append("commands (CPUs as for the first batch of each worker):")
        lines += ["  " + quote_argv(self._argv(request, b, workers[i % len(workers)]))
                  for i, b in enumerate(request.batch_ids)]
        return "\n".join(lines)

    def state_running(self, folder: pathlib.Path) -> bool:
        """Whether a run-batch recorded in ``folder`` (its ``<batch>.pid`` files) still runs."""
        for pid_file in folder.glob("*.pid"):
            try:
                pid = int(json.loads(pid_file.read_text())["pid"])
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if b"run-batch" in cmdline.split(b"\0"):
                return True
        return False

    def max_processes(self, options: BackendOptions) -> int | None:
        return 4 * (os.cpu_count() or 1)

    def launch(self, request: LaunchRequest) -> Submission:
        state = _state_dir(request.bucket_url, request.sweep)
        state.mkdir(parents=True, exist_ok=True)
        free = self._workers(request)  # idle slots; a finished batch gives its slot back
        slot_of: dict[str, Worker] = {}
        pending = list(request.batch_ids)
        running: dict[str, subprocess.Popen] = {}
        codes: dict[str, int] = {}
        commands: list[list[str]] = []
        say = request.log or (lambda _line: None)  # the API's log (it keeps only warnings)
        console = Console(stderr=True) if request.live else None
        stopped: list[int] = []  # the terminating signal(s) this launch received
        never_started: list[str] = []  # waiting when `qec-kiln cancel` came
        cancel_record = state / _SWEEP_CANCEL
        began = time.time()  # a cancel recorded before this launch began does not stop it
        me = state / f"{_LAUNCHER}{os.getpid()}.json"  # what `cancel` reads: who waits here
        my_start = _start_ticks(os.getpid())

        def note_waiting() -> None:  # rewritten only when the waiting batches change
            me.write_text(json.dumps({"pid": os.getpid(), "started": my_start, "waiting": pending}))

        def states() -> dict[str, str]:
            out = {b: "waiting" for b in pending}
            out.update({b: "cancelled" for b in never_started})
            out.update({b: "running" for b in running})
            out.update({b: _ended(state, b, c) for b, c in codes.items()})
            return out

        def cancelled_here() -> bool:
            """`qec-kiln cancel` of this sweep: start nothing more, and stop what runs (a
            batch started while the cancel looked for running ones is stopped here)."""
            try:
                if float(cancel_record.read_text()) < began:
                    return False
            except (OSError, ValueError):
                return False
            if pending:
                never_started.extend(pending)
                pending.clear()
                note_waiting()
            for b, p in running.items():
                if not (state / f"{b}.cancel").exists():
                    (state / f"{b}.cancel").write_text(str(time.time()))
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGTERM)
            return True

        with (_StopSignals(stopped), _progress(request, state, states, say, console) as shown,
              _removed_at_exit(me)):
            note_waiting()
            while (pending or running) and not stopped:
                while pending and free and not stopped and not cancelled_here():
                    b = pending.pop(0)
                    slot_of[b] = free.pop(0)
                    argv = self._argv(request, b, slot_of[b])
                    commands.append(argv)
                    running[b] = self._start(state, b, argv, slot_of[b].env)
                    note_waiting()
                time.sleep(0.2)
                cancelled_here()
                for b, p in list(running.items()):
                    if p.poll() is not None:
                        codes[b] = p.returncode
                        (state / f"{b}.exit").write_text(str(p.returncode))
                        del running[b]
                        free.append(slot_of[b])
                        ended_as = _ended(state, b, p.returncode)
                        if ended_as == "failed":
                            why = _last_error(state / f"{b}.out")
                            say(f"{b} failed (exit {p.returncode}){': ' + why if why else ''}; "
                                f"log: {state / (b + '.out')}")
                        elif ended_as == "elsewhere":
                            say(f"{b}: run by another run-batch of this sweep "
                                "(another launch); not counted as failed")
                if shown is not None:
                    shown.update()
            if stopped:
                name = signal.Signals(stopped[0]).name
                say(f"{name}: stopping batches and uploading their resume files...")
                for p in running.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGTERM)
                for b, p in running.items():
                    try:
                        codes[b] = p.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(p.pid, signal.SIGKILL)
                        codes[b] = p.wait()
                    (state / f"{b}.exit").write_text(str(codes[b]))
                running.clear()
        ended = states()
        failed = sorted(b for b in codes if ended[b] == "failed")
        cancelled = sorted([b for b in codes if ended[b] == "cancelled"] + never_started)
        elsewhere = sorted(b for b in codes if ended[b] == "elsewhere")
        for b in codes:
            if ended[b] == "done":  # its fragment is final: the local copy is not needed
                shutil.rmtree(_work_dir(state, request.sweep, b), ignore_errors=True)
        for empty in (state / "work" / request.sweep, state / "work"):
            with contextlib.suppress(OSError):
                empty.rmdir()
        if stopped:
            msg = "interrupted: run the same launch again to resume"
        elif failed:
            msg = f"{len(failed)} batch(es) failed: {', '.join(failed)}; logs in {state}"
            why = _last_error(state / f"{failed[0]}.out")
            if why:
                msg += f"; {failed[0]}: {why}"
            if cancelled:
                msg += f"; {len(cancelled)} cancelled (qec-kiln cancel): {', '.join(cancelled)}"
        elif cancelled:
            waited = f" ({', '.join(never_started)} never started)" if never_started else ""
            msg = (f"{len(cancelled)} batch(es) cancelled (qec-kiln cancel): "
                   f"{', '.join(cancelled)}{waited}; run the same launch again to resume")
        elif elsewhere:
            msg = (f"{len(codes) - len(elsewhere)} batch(es) finished; {len(elsewhere)} run by "
                   f"another launch of this sweep ({', '.join(elsewhere)}): see `qec-kiln status`")
        else:
            msg = f"all {len(codes)} batch(es) finished"
        return Submission(job_ids={b: str(b) for b in request.batch_ids}, commands=commands,
                          message=msg, failed=failed, interrupted=bool(stopped),
                          signal=stopped[0] if stopped else 0, cancelled=cancelled)

    def _start(self, state: pathlib.Path, batch: str, argv: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen:
        for old in (f"{batch}.exit", f"{batch}.cancel"):
            with contextlib.suppress(FileNotFoundError):
                (state / old).unlink()
        out = open(state / f"{batch}.out", "ab")  # noqa: SIM115 (the child holds it)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True,
                                    env={**os.environ, **env} if env else None)
        finally:
            out.close()
        (state / f"{batch}.pid").write_text(json.dumps({"pid": proc.pid, "started": time.time()}))
        return proc

    def job_states(self, bucket_url: str, sweep: str) -> dict[str, JobState]:
        state = _state_dir(bucket_url, sweep)
        out: dict[str, JobState] = {}
        if not state.is_dir():
            return out
        for pid_file in sorted(state.glob("*.pid")):
            b = pid_file.stem
            pid = _read_pid(pid_file)
            if pid is not None and _is_run_batch(pid, sweep):
                out[b] = JobState(b, "RUNNING", job_id=f"pid {pid}")
                continue
            try:
                rc = int((state / f"{b}.exit").read_text())
            except (OSError, ValueError):
                out[b] = JobState(b, "STOPPED", job_id=f"pid {pid}", detail="exited without a record")
                continue
            name = {"done": "SUCCEEDED", "cancelled": "CANCELLED"}.get(_ended(state, b, rc), "FAILED")
            why = _last_error(state / f"{b}.out") if name == "FAILED" else None
            out[b] = JobState(b, name, job_id=f"pid {pid}",
                              detail=f"exit {rc}" + (f": {why}" if why else ""))
        return out

    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        """SIGTERM every running batch of the sweep, and tell its launches to start no more
        (they stop any batch they start meanwhile); returns running and waiting batches."""
        state = _state_dir(bucket_url, sweep)
        if not state.is_dir():
            return []
        (state / _SWEEP_CANCEL).write_text(str(time.time()))  # first: no launch starts more
        cancelled = []
        for launcher in sorted(state.glob(f"{_LAUNCHER}*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                record = json.loads(launcher.read_text())
                launch_pid = int(record["pid"])
                if record["started"] is not None and _start_ticks(launch_pid) == record["started"]:
                    cancelled += [str(b) for b in record["waiting"]]  # that launch still runs
        for pid_file in sorted(state.glob("*.pid")):
            pid = _read_pid(pid_file)
            if pid is not None and _is_run_batch(pid, sweep):
                # The record first: the launcher then reports the batch CANCELLED, not failed.
                (state / f"{pid_file.stem}.cancel").write_text(str(time.time()))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                cancelled.append(pid_file.stem)
        return sorted(set(cancelled))

    def live_fragments(self, bucket_url: str, sweep: str) -> dict[str, bytes]:
        work = _state_dir(bucket_url, sweep) / "work" / sweep
        out = {}
        for resume in sorted(work.glob("*/resume.csv")) if work.is_dir() else []:
            with contextlib.suppress(OSError):
                out[resume.parent.name] = resume.read_bytes()
        return out


#: Exit codes of a run-batch stopped by SIGINT, SIGTERM or SIGHUP (it uploads, then exits so).
STOPPED_CODES = frozenset({Exit.for_signal(signal.SIGINT), Exit.for_signal(signal.SIGTERM),
                           Exit.for_signal(signal.SIGHUP),
                           -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP})


def _ended(state: pathlib.Path, batch: str, code: int) -> str:
    """``done``, ``elsewhere`` (another run-batch holds the batch), ``cancelled`` (a cancel
    record, or stopped by a signal this launch did not send) or ``failed``."""
    if code == 0:
        return "done"
    if code == Exit.CONFLICT:  # another run-batch holds it (a second launch): not failed, not ours
        return "elsewhere"
    if code in STOPPED_CODES or (state / f"{batch}.cancel").exists():
        return "cancelled"
    return "failed"


def _work_dir(state: pathlib.Path, sweep: str, batch: str) -> pathlib.Path:
    """Where run-batch keeps the batch's circuits and resume file (``--work-dir``)."""
    return state / "work" / sweep / batch


class _StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP are recorded in ``stopped`` (the launch loop
    then stops every batch the way Ctrl-C does) instead of ending the process at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stopped: list[int]):
        self.stopped = stopped
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for s in self.SIGNALS:
            self.old[s] = signal.signal(s, lambda signum, _frame: self.stopped.append(signum))
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _last_error(log: pathlib.Path) -> str | None:
    """The last error line of a local batch's log (its last 64 kB)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            return last_error_line(f.read().decode("utf-8", "replace"))
    except OSError:
        return None


@contextlib.contextmanager
def _progress(request: LaunchRequest, state: pathlib.Path, states, say, console: Console | None):
    """Live shots/errors/ETA of the batches (None, and a warning, if the plan cannot be read):
    a live table on ``console``, else lines to ``say``; nothing without a log."""
    from qec_kiln._errors import KilnError
    from qec_kiln._report.progress import LaunchProgress, ResumeReader
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest

    try:
        manifest = load_manifest(open_bucket(request.bucket_url), request.sweep)
    except KilnError as ex:
        say(f"warning: no live progress ({ex})")
        yield None
        return
    reader = ResumeReader(manifest, lambda b: _work_dir(state, request.sweep, b) / "resume.csv")
    with LaunchProgress(reader, request.batch_ids, states, say, console) as shown:
        yield shown


#: In a sweep's state folder: `qec-kiln cancel` came (launches start no more batches), and
#: each running launch's record (its pid and its waiting batches).
_SWEEP_CANCEL, _LAUNCHER = "sweep.cancel", "launcher-"


def _start_ticks(pid: int) -> int | None:
    """When a live process started (``/proc/<pid>/stat`` field 22, in clock ticks since boot):
    with its pid, it tells the launch that wrote a record from a later process given the same
    pid. None when the process is gone (or a zombie)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


@contextlib.contextmanager
def _removed_at_exit(path: pathlib.Path):
    """Remove ``path`` however the block ends (a launch's record must not outlive it)."""
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _read_pid(path: pathlib.Path) -> int | None:
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_run_batch(pid: int, sweep: str) -> bool:
    """Whether ``pid`` is (still) a run-batch of this sweep, not a recycled pid."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rindex(")") + 2:].startswith("Z"):
        return False
    args = cmdline.split(b"\0")
    return b"run-batch" in args and sweep.encode() in args

"""The default backend: each batch is a local ``qec-kiln run-batch`` process.

``launch`` runs up to ``--parallel`` batches at once in the foreground and splits the cores
between them (sinter's ``--processes``). Ctrl-C sends SIGTERM to every batch, which stops sinter
and uploads the complete lines of its resume file, so the next ``launch`` resumes. ``status`` and
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
import signal
import subprocess
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qec_kiln._argtypes import positive_int
from qec_kiln._backends._base import (
    Backend,
    BackendOptions,
    JobState,
    LaunchRequest,
    Submission,
    kiln_home,
    quote_argv,
)


def _state_dir(bucket_url: str, sweep: str) -> pathlib.Path:
    """``$QEC_KILN_HOME/local/<sweep>-<8 hex of the bucket URL>``: one sweep name in two buckets
    gets two folders (job records and work files never mix)."""
    digest = hashlib.sha256(bucket_url.encode()).hexdigest()[:8]
    return kiln_home() / "local" / f"{sweep}-{digest}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def split_cores(num_batches: int, parallel: int | None, processes: int | None) -> tuple[int, int]:
    """(batches at once, sinter processes each) so that together they use the machine's cores.

    >>> split_cores(10, None, None)[0] <= 10
    True
    >>> split_cores(3, 2, 4)
    (2, 4)
    """
    cores = _cores()
    slots = parallel or max(1, min(num_batches, cores))
    slots = max(1, min(slots, num_batches))
    procs = processes or max(1, cores // slots)
    return slots, procs


@dataclasses.dataclass(frozen=True)
class LocalOptions(BackendOptions):
    """The local backend's options: the common ones and how many batches run at once."""

    parallel: int | None = None  # batches at once (default: as many as the cores allow)


class LocalBackend(Backend):
    """Batches as local processes, up to ``parallel`` at once, sharing the cores.

    >>> b = LocalBackend()
    >>> b.target_processes(b.options()), b.batch_slots(b.options({"parallel": 2}), 5)
    (1, 2)
    """

    name = "local"
    options_type = LocalOptions
    startup_seconds = 2.0
    decoders_run_here = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("local")
        g.add_argument("--parallel", type=positive_int,
                       help="batches at once (default: as many as the cores allow)")

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> BackendOptions:
        return LocalOptions.from_args(args, parallel=getattr(args, "parallel", None))

    def node_processes(self, options: BackendOptions, num_batches: int) -> int:
        opts = self.options(options)
        return opts.processes or split_cores(num_batches, opts.parallel, None)[1]

    def target_processes(self, options: BackendOptions) -> int:
        # Many batches share the cores: count one process per batch (the worst case).
        return options.processes or 1

    def batch_slots(self, options: BackendOptions, num_batches: int) -> int:
        opts = self.options(options)
        return split_cores(num_batches, opts.parallel, opts.processes)[0]

    def default_jobs(self, options: BackendOptions, task_seconds) -> int:
        """One batch per core slot."""
        return self.batch_slots(options, len(task_seconds))

    def _argv(self, request: LaunchRequest, batch: str, processes: int) -> list[str]:
        argv = request.run_batch_argv(batch_id=batch)
        argv = [sys.executable, "-m", "qec_kiln"] + argv[1:]
        if "--processes" not in argv:
            argv += ["--processes", str(processes)]
        argv += ["--work-dir", str(_state_dir(request.bucket_url, request.sweep) / "work")]
        return argv

    def describe(self, request: LaunchRequest) -> str:
        opts = self.options(request.options)
        slots, procs = split_cores(len(request.batch_ids), opts.parallel, opts.processes)
        lines = [f"local backend: {len(request.batch_ids)} batch(es), {slots} at a time, "
                 f"sinter --processes {procs} each; commands:"]
        lines += ["  " + quote_argv(self._argv(request, b, procs)) for b in request.batch_ids]
        return "\n".join(lines)

    def launch(self, request: LaunchRequest) -> Submission:
        state = _state_dir(request.bucket_url, request.sweep)
        state.mkdir(parents=True, exist_ok=True)
        opts = self.options(request.options)
        slots, procs = split_cores(len(request.batch_ids), opts.parallel, opts.processes)
        pending = list(request.batch_ids)
        running: dict[str, subprocess.Popen] = {}
        codes: dict[str, int] = {}
        commands: list[list[str]] = []
        console = Console(stderr=True)
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=False)
        interrupted = False
        with progress:
            bar = progress.add_task(f"sweep {request.sweep}", total=len(pending))
            try:
                while pending or running:
                    while pending and len(running) < slots:
                        b = pending.pop(0)
                        argv = self._argv(request, b, procs)
                        commands.append(argv)
                        running[b] = self._start(state, b, argv)
                    time.sleep(0.2)
                    for b, p in list(running.items()):
                        if p.poll() is not None:
                            codes[b] = p.returncode
                            (state / f"{b}.exit").write_text(str(p.returncode))
                            del running[b]
                            progress.advance(bar)
                            if p.returncode:
                                console.print(f"[red]{b} failed (exit {p.returncode}); "
                                              f"log: {state / (b + '.out')}")
            except KeyboardInterrupt:
                interrupted = True
                console.print("interrupted: stopping batches and uploading their resume files...")
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
        failed = sorted(b for b, c in codes.items() if c != 0)
        if interrupted:
            msg = "interrupted: run the same launch again to resume"
        elif failed:
            msg = f"{len(failed)} batch(es) failed: {', '.join(failed)}; logs in {state}"
        else:
            msg = f"all {len(codes)} batch(es) finished"
        return Submission(job_ids={b: str(b) for b in request.batch_ids}, commands=commands,
                            message=msg, failed=failed, interrupted=interrupted)

    def _start(self, state: pathlib.Path, batch: str, argv: list[str]) -> subprocess.Popen:
        with contextlib.suppress(FileNotFoundError):
            (state / f"{batch}.exit").unlink()
        out = open(state / f"{batch}.out", "ab")  # noqa: SIM115 (the child holds it)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
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
            name = "SUCCEEDED" if rc == 0 else ("CANCELLED" if rc in (130, 143) else "FAILED")
            out[b] = JobState(b, name, job_id=f"pid {pid}", detail=f"exit {rc}")
        return out

    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        state = _state_dir(bucket_url, sweep)
        cancelled = []
        for pid_file in sorted(state.glob("*.pid")) if state.is_dir() else []:
            pid = _read_pid(pid_file)
            if pid is not None and _is_run_batch(pid, sweep):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                cancelled.append(pid_file.stem)
        return cancelled


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

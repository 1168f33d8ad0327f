"""The default backend: each batch is a local ``qec-kiln run-batch`` process.

``launch`` runs the batches in the foreground on ``--workers K`` slots (``--parallel`` is an alias;
default one slot with all the cores, or one per GPU with ``--gpus``): each slot takes the next
batch, longest first, when it is free. Each slot has its own CPUs (``_workers.worker_environments``
of this process's affinity mask), which run-batch hands to sinter (``--cpus-allowed``), so
concurrent sinters never share a core by accident. Ctrl-C sends SIGTERM to every batch, which stops sinter
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
from qec_kiln._workers import Worker, format_cpus, gpu_ids, machine_cpus, worker_environments


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
    >>> b.target_processes(b.options({"processes": 1})), b.batch_slots(b.options({"parallel": 2}), 5)
    (1, 2)
    >>> b.batch_slots(b.options(), 5)  # one slot with all the cores
    1
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
    def options(cls, value=None) -> BackendOptions:
        if isinstance(value, dict) and "parallel" in value:  # the old name of workers
            value = dict(value)
            value.setdefault("workers", value.pop("parallel"))
        return super().options(value)

    def requested_workers(self, options: BackendOptions) -> int:
        return options.workers or max(1, len(gpu_ids(options.gpus)))

    def node_processes(self, options: BackendOptions, num_batches: int) -> int:
        opts = self.options(options)
        return split_cores(max(1, num_batches), opts.workers, opts.processes, opts.gpus)[1]

    def target_processes(self, options: BackendOptions) -> int:
        return options.processes or self.node_processes(options, 10**9)

    def batch_slots(self, options: BackendOptions, num_batches: int) -> int:
        opts = self.options(options)
        return split_cores(max(1, num_batches), opts.workers, opts.processes, opts.gpus)[0]

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

    def launch(self, request: LaunchRequest) -> Submission:
        state = _state_dir(request.bucket_url, request.sweep)
        state.mkdir(parents=True, exist_ok=True)
        free = self._workers(request)  # idle slots; a finished batch gives its slot back
        slot_of: dict[str, Worker] = {}
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
                    while pending and free:
                        b = pending.pop(0)
                        slot_of[b] = free.pop(0)
                        argv = self._argv(request, b, slot_of[b])
                        commands.append(argv)
                        running[b] = self._start(state, b, argv, slot_of[b].env)
                    time.sleep(0.2)
                    for b, p in list(running.items()):
                        if p.poll() is not None:
                            codes[b] = p.returncode
                            (state / f"{b}.exit").write_text(str(p.returncode))
                            del running[b]
                            free.append(slot_of[b])
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

    def _start(self, state: pathlib.Path, batch: str, argv: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen:
        with contextlib.suppress(FileNotFoundError):
            (state / f"{batch}.exit").unlink()
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

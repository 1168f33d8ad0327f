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

import contextlib
import json
import os
import pathlib
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from qec_kiln._backends.base import (
    Backend,
    BackendOptions,
    JobState,
    LaunchRequest,
    Submission,
    quote_argv,
)
from qec_kiln._backends.local.options import LocalOptions
from qec_kiln._backends.local.slots import SlotQueue, StopSignals, removed_at_exit
from qec_kiln._backends.local.state import StateFolder, is_run_batch
from qec_kiln._node.processes import start_ticks
from qec_kiln._node.workers import Worker, format_cpus, slot_processes, slot_workers
from qec_kiln._planning.capacity import Capacity


class LocalBackend(Backend):
    """Batches as local processes on K slots, each with its own CPUs.

    >>> b = LocalBackend()
    >>> b.capacity(b.options({"processes": 1})).surely_processes
    1
    >>> b.capacity(b.options({"parallel": 2})).at(5).slots, b.capacity(b.options()).at(5).slots
    (2, 1)
    """

    name = "local"
    options_type = LocalOptions
    startup_seconds = 2.0
    decoders_run_here = True
    queue_workers = True

    @classmethod
    def options(cls, value: BackendOptions | Mapping[str, Any] | None = None) -> LocalOptions:
        if isinstance(value, Mapping) and "parallel" in value:  # the old name of workers
            value = dict(value)
            value.setdefault("workers", value.pop("parallel"))
        opts = super().options(value)
        assert isinstance(opts, LocalOptions)
        return opts

    def capacity(self, options: BackendOptions) -> Capacity:
        """K slots (default one with every core, or one per GPU), the cores split among them
        (among fewer when there are fewer batches than slots)."""
        opts = self.options(options)
        k, procs = slot_processes(opts.workers, opts.processes, opts.gpus)
        return Capacity(processes=procs[-1], startup_seconds=self.startup_seconds, slots=k,
                        workers=k, min_processes=opts.processes or procs[-1],
                        decoders_run_here=True, fewer_slots_processes=procs)

    def _argv(self, request: LaunchRequest, batches: list[str], worker: Worker) -> list[str]:
        argv = request.run_batch_argv(batch_id=batches[0])
        if len(batches) > 1:  # one worker's whole queue (see slots.SlotQueue together)
            at = argv.index("--batch")
            argv[at:at + 2] = ["--batches", ",".join(batches), "--all"]
        argv = [sys.executable, "-m", "qec_kiln"] + argv[1:]
        if "--processes" not in argv:
            argv += ["--processes", str(len(worker.cpus))]
        argv += ["--cpus-allowed", format_cpus(worker.cpus)]
        argv += ["--work-dir", str(StateFolder.of(request.bucket_url, request.sweep).work)]
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
        if len(workers) == 1:  # one run-batch for the worker's whole queue
            lines.append("command:")
            runs = [(list(request.batch_ids), workers[0])]
        else:
            lines.append("commands (CPUs as for the first batch of each worker):")
            runs = [([b], workers[i % len(workers)]) for i, b in enumerate(request.batch_ids)]
        lines += ["  " + quote_argv(self._argv(request, batches, w)) for batches, w in runs]
        return "\n".join(lines)

    def state_running(self, folder: pathlib.Path) -> bool:
        """Whether a run-batch recorded in ``folder`` (its ``<batch>.pid`` files) still runs."""
        for pid_file in folder.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                record = json.loads(pid_file.read_text())
                if is_run_batch(int(record["pid"]), ticks=record.get("ticks")):
                    return True
        return False

    def max_processes(self, options: BackendOptions) -> int | None:
        return 4 * (os.cpu_count() or 1)

    def launch(self, request: LaunchRequest) -> Submission:
        state = StateFolder.of(request.bucket_url, request.sweep)
        state.root.mkdir(parents=True, exist_ok=True)
        say = request.log or (lambda _line: None)  # the API's log (it keeps only warnings)
        console = Console(stderr=True) if request.live else None
        workers = self._workers(request)
        queue = SlotQueue(state, list(request.batch_ids), workers,
                          lambda batches, slot: self._argv(request, batches, slot), say,
                          together=len(workers) == 1)
        with StopSignals(queue.stopped), removed_at_exit(queue.me):
            queue.start_free()  # before the live view's thread: forked, where that is safe
            with _progress(request, state, queue.states, say, console) as shown:
                queue.run(shown)
        return queue.submission(list(request.batch_ids))

    def job_states(self, bucket_url: str, sweep: str) -> dict[str, JobState]:
        state = StateFolder.of(bucket_url, sweep)
        out: dict[str, JobState] = {}
        if not state.root.is_dir():
            return out
        for pid_file in state.pid_files():
            b = pid_file.stem
            pid = state.read_pid(b)
            if state.running_pid(b) is not None:
                out[b] = JobState(b, "RUNNING", job_id=f"pid {pid}")
                continue
            try:
                rc = int(state.exit(b).read_text())
            except (OSError, ValueError):
                out[b] = JobState(b, "STOPPED", job_id=f"pid {pid}", detail="exited without a record")
                continue
            name = {"done": "SUCCEEDED", "cancelled": "CANCELLED"}.get(state.ended(b, rc), "FAILED")
            why = state.last_error(b) if name == "FAILED" else None
            out[b] = JobState(b, name, job_id=f"pid {pid}",
                              detail=f"exit {rc}" + (f": {why}" if why else ""))
        return out

    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        """SIGTERM every running batch of the sweep, and tell its launches to start no more
        (they stop any batch they start meanwhile); returns running and waiting batches."""
        state = StateFolder.of(bucket_url, sweep)
        if not state.root.is_dir():
            return []
        state.sweep_cancel.write_text(str(time.time()))  # first: no launch starts more
        cancelled = []
        for launcher in state.launchers():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                record = json.loads(launcher.read_text())
                if record["started"] is not None and start_ticks(int(record["pid"])) == record["started"]:
                    cancelled += [str(b) for b in record["waiting"]]  # that launch still runs
        for pid_file in state.pid_files():
            pid = state.running_pid(pid_file.stem)
            if pid is not None:
                # The record first: the launcher then reports the batch CANCELLED, not failed.
                state.cancel(pid_file.stem).write_text(str(time.time()))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                cancelled.append(pid_file.stem)
        return sorted(set(cancelled))

    def live_fragments(self, bucket_url: str, sweep: str) -> dict[str, bytes]:
        state = StateFolder.of(bucket_url, sweep)
        work = state.work / sweep
        out = {}
        for resume in sorted(work.glob("*/resume.csv")) if work.is_dir() else []:
            with contextlib.suppress(OSError):
                out[resume.parent.name] = resume.read_bytes()
        return out


@contextlib.contextmanager
def _progress(request: LaunchRequest, state: StateFolder, states, say, console: Console | None):
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
    reader = ResumeReader(manifest, state.resume_file)
    with LaunchProgress(reader, request.batch_ids, states, say, console) as shown:
        yield shown

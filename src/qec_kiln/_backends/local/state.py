"""The local backend's files for one sweep, named in one place.

``$QEC_KILN_HOME/local/<sweep>-<8 hex of the bucket URL>/`` holds, per batch, ``<b>.pid`` (the
run-batch's pid, JSON), ``<b>.out`` (its log), ``<b>.exit`` (its exit code) and ``<b>.cancel``
(written by ``qec-kiln cancel`` before it signals the batch); per sweep ``sweep.cancel`` (launches
start no more batches) and ``launcher-<pid>.json`` (a running launch and its waiting batches);
and ``work/<sweep>/<b>/`` (run-batch's ``--work-dir``: circuits and the resume file).

    >>> s = StateFolder.of("/tmp/bucket", "demo")
    >>> s.pid("b000").name, s.work_dir("b000").parts[-3:]
    ('b000.pid', ('work', 'demo', 'b000'))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import signal

from qec_kiln._backends.base import kiln_home
from qec_kiln._errors import Exit
from qec_kiln._node.processes import command_line, is_live, start_ticks
from qec_kiln._report.failures import last_error_line

#: Exit codes of a run-batch stopped by SIGINT, SIGTERM or SIGHUP (it uploads, then exits so).
STOPPED_CODES = frozenset({Exit.for_signal(signal.SIGINT), Exit.for_signal(signal.SIGTERM),
                           Exit.for_signal(signal.SIGHUP),
                           -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP})


@dataclasses.dataclass(frozen=True)
class StateFolder:
    """One sweep's local state: every file the launch, ``status`` and ``cancel`` share."""

    root: pathlib.Path
    sweep: str

    @classmethod
    def of(cls, bucket_url: str, sweep: str) -> StateFolder:
        """One sweep name in two buckets gets two folders (records and work never mix)."""
        digest = hashlib.sha256(bucket_url.encode()).hexdigest()[:8]
        return cls(kiln_home() / "local" / f"{sweep}-{digest}", sweep)

    def pid(self, batch: str) -> pathlib.Path:
        return self.root / f"{batch}.pid"

    def out(self, batch: str) -> pathlib.Path:
        return self.root / f"{batch}.out"

    def exit(self, batch: str) -> pathlib.Path:
        return self.root / f"{batch}.exit"

    def cancel(self, batch: str) -> pathlib.Path:
        return self.root / f"{batch}.cancel"

    @property
    def sweep_cancel(self) -> pathlib.Path:
        return self.root / "sweep.cancel"

    def launcher(self, pid: int) -> pathlib.Path:
        return self.root / f"launcher-{pid}.json"

    def launchers(self) -> list[pathlib.Path]:
        return sorted(self.root.glob("launcher-*.json"))

    def pid_files(self) -> list[pathlib.Path]:
        return sorted(self.root.glob("*.pid"))

    @property
    def work(self) -> pathlib.Path:
        """run-batch's ``--work-dir``."""
        return self.root / "work"

    def work_dir(self, batch: str) -> pathlib.Path:
        """Where run-batch keeps the batch's circuits and resume file."""
        return self.work / self.sweep / batch

    def resume_file(self, batch: str) -> pathlib.Path:
        return self.work_dir(batch) / "resume.csv"

    def read_pid(self, batch: str) -> int | None:
        try:
            return int(json.loads(self.pid(batch).read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running_pid(self, batch: str) -> int | None:
        """The pid of the batch's run-batch if it still runs (not a recycled pid)."""
        try:
            record = json.loads(self.pid(batch).read_text())
            pid, ticks = int(record["pid"]), record.get("ticks")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if is_run_batch(pid, self.sweep, ticks) else None

    def last_error(self, batch: str) -> str | None:
        """The last error line of the batch's log (its last 64 kB), or None."""
        try:
            with open(self.out(batch), "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
                return last_error_line(f.read().decode("utf-8", "replace"))
        except OSError:
            return None

    def ended(self, batch: str, code: int) -> str:
        """``done``, ``elsewhere`` (another run-batch holds the batch), ``cancelled`` (a cancel
        record, or stopped by a signal) or ``failed``."""
        if code == 0:
            return "done"
        if code == Exit.CONFLICT:  # another run-batch holds it (a second launch): not ours
            return "elsewhere"
        if code in STOPPED_CODES or self.cancel(batch).exists():
            return "cancelled"
        return "failed"


def is_run_batch(pid: int, sweep: str | None = None, ticks: int | None = None) -> bool:
    """Whether ``pid`` is (still) a run-batch (of ``sweep``), not a recycled pid or a zombie:
    the process that started at ``ticks`` (see ``start_ticks``; a forked run-batch keeps its
    launcher's command line), else one whose command line says so."""
    if ticks is not None:
        return start_ticks(pid) == ticks
    args = command_line(pid)
    return is_live(pid) and b"run-batch" in args and (sweep is None or sweep.encode() in args)

"""The one interface every backend (local, skypilot, slurm) implements.

A backend only starts, watches and stops *batches*; discovery, planning, uploading the sweep to the
bucket and merging are the same for all of them. On every node the batch runs the same command::

    qec-kiln run-batch --bucket URL --sweep NAME --batches b000,b003 --index "$RANK"

which picks ``batches[index]`` (or ``--batch b003`` directly).
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import json
import os
import pathlib
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from qec_kiln._argtypes import MAX_SYNC_SECONDS
from qec_kiln._atomic import atomic_write
from qec_kiln._backends.jobs import ACTIVE_STATES, JobState, is_active  # noqa: F401 (the interface's names)
from qec_kiln._backends.options import BackendOptions, add_own_flags, options_from_args
from qec_kiln._errors import KilnError, Log
from qec_kiln._planning.capacity import Capacity

if TYPE_CHECKING:
    from qec_kiln._storage import Bucket


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """Everything a backend needs to start some batches of a sweep."""

    bucket_url: str
    sweep: str
    batch_ids: tuple[str, ...]
    options: BackendOptions
    num_batches_total: int = 0
    kiln_version: str = ""
    decoders: tuple[str, ...] = ()  # the sweep's decoders (a remote node installs their packages)
    custom_decoders_module_function: str | None = None
    python: str | None = None  # the major.minor the nodes must run (shipped decoder objects)
    node_hour_price: float | None = None  # from --price-per-cpu/gpu-hour (idle cost of a pool)
    # Where a backend that runs the batches itself (local) sends its lines (progress, failures,
    # warnings); None: nowhere. ``live``: a live table on the terminal instead of progress lines.
    log: Log | None = dataclasses.field(default=None, compare=False)
    live: bool = False

    def run_batch_argv(self, index_expr: str | None = None, batch_id: str | None = None) -> list[str]:
        """The argv of the node command; ``index_expr`` is a shell word like ``"$SLURM_ARRAY_TASK_ID"``.

        >>> r = LaunchRequest("s3://b", "sw", ("b000", "b002"), BackendOptions())
        >>> r.run_batch_argv(batch_id="b002")[:4]
        ['qec-kiln', 'run-batch', '--bucket', 's3://b']
        """
        argv = ["qec-kiln", "run-batch", "--bucket", self.bucket_url, "--sweep", self.sweep]
        if batch_id is not None:
            argv += ["--batch", batch_id]
        else:
            argv += ["--batches", ",".join(self.batch_ids), "--index", index_expr or "0"]
        argv += ["--sync-seconds", f"{self.options.sync_seconds:g}"]
        if self.options.processes:
            argv += ["--processes", str(self.options.processes)]
        return argv

    def run_batch_shell(self, index_var: str) -> str:
        """The node command as one shell line, every word quoted except the ``$VAR`` index.

        >>> r = LaunchRequest("s3://b", "sw", ("b000",), BackendOptions())
        >>> r.run_batch_shell("SLURM_ARRAY_TASK_ID").split(" --index ")[1]
        '"$SLURM_ARRAY_TASK_ID" --sync-seconds 30'
        """
        marker = "__KILN_INDEX__"
        words = [shlex.quote(w) for w in self.run_batch_argv(index_expr=marker)]
        return " ".join(f'"${index_var}"' if w == marker else w for w in words)


@dataclasses.dataclass
class Submission:
    """What was started: one job id per batch (or one array id for all), and the commands used."""

    job_ids: dict[str, str]
    commands: list[list[str]]
    message: str = ""
    failed: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    signal: int = 0  # the signal that stopped the launch (interrupted), e.g. 15 for SIGTERM
    cancelled: list[str] = dataclasses.field(default_factory=list)  # by `qec-kiln cancel`


class _NoBucket:
    """Stand-in for a bucket a dry run could not reach: nothing exists in it."""

    def __init__(self, url: str):
        self.url = url

    def exists(self, key: str) -> bool:
        return False

    def list_keys(self, prefix: str = "") -> list[str]:
        return []


class Backend(abc.ABC):
    """Starts, watches and stops the batches of a sweep on one kind of infrastructure, and answers
    what only it knows: start-up time, processes and slots per batch, its flags and warnings.

    >>> from qec_kiln._backends import get_backend
    >>> b = get_backend("slurm")
    >>> c = b.capacity(b.options({"cpus": "8"})).at(3)
    >>> c.startup_seconds, c.processes, c.slots
    (30.0, 8, 3)
    """

    name: ClassVar[str] = ""
    #: The dataclass of this backend's options (a subclass of BackendOptions).
    options_type: ClassVar[type[BackendOptions]] = BackendOptions
    #: Seconds a batch's job takes to start: a plan weighs it against each batch's work.
    startup_seconds: ClassVar[float] = 60.0
    #: Batches run on this machine, so their decoders must be importable here.
    decoders_run_here: ClassVar[bool] = False
    #: sinter processes per batch when neither --processes nor --cpus says.
    default_processes: ClassVar[int] = 1
    #: The engine has a queue that K workers take batches from (--workers); else every batch is
    #: its own job and all start at once.
    queue_workers: ClassVar[bool] = False

    # ------------------------------------------------------------------ options

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's own flags (an argument group) to ``parser``, derived from the
        fields of :attr:`options_type` (``--<name>-<field>`` and the aliases they declare)."""
        add_own_flags(parser, cls.name, cls.options_type)

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> BackendOptions:
        """This backend's options from parsed flags (the common ones and its own)."""
        return options_from_args(cls.name, cls.options_type, args)

    @classmethod
    def options(cls, value: BackendOptions | Mapping[str, Any] | None = None) -> BackendOptions:
        """``value`` as this backend's options: a mapping of field names, or options of any
        backend (their common settings are kept); unknown names are refused."""
        if isinstance(value, cls.options_type):
            return value
        if isinstance(value, BackendOptions):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(BackendOptions)}
        fields = [f.name for f in dataclasses.fields(cls.options_type)]
        unknown = sorted(set(value or {}) - set(fields))
        if unknown:
            raise KilnError(f"backend option {unknown[0]!r} is not one of the {cls.name} "
                            f"backend's: {', '.join(fields)}")
        return cls.options_type(**dict(value or {}))

    # ------------------------------------------------------------------ planning

    def capacity(self, options: BackendOptions) -> Capacity:
        """The one question planning asks: how batches run with ``options`` (processes each,
        start-up, batches at once, K workers of a queue; ``.at(n)`` for ``n`` batches). A
        backend without a queue refuses ``--workers``."""
        if options.workers and not self.queue_workers:
            raise KilnError(f"--workers {options.workers}: the {self.name} backend runs one job "
                            "per batch, all at once (pools are not supported yet); leave out "
                            "--workers and choose the batch count with --jobs")
        return Capacity(processes=self._processes(options), startup_seconds=self.startup_seconds,
                        slots=options.workers, workers=options.workers,
                        min_processes=options.processes or self._processes(options),
                        decoders_run_here=self.decoders_run_here)

    def _processes(self, options: BackendOptions) -> int:
        """sinter processes per batch: --processes, else the digits of --cpus, else the default."""
        if options.processes:
            return options.processes
        digits = "".join(ch for ch in options.cpus or "" if ch.isdigit())
        return max(1, int(digits)) if digits else self.default_processes

    def max_processes(self, options: BackendOptions) -> int | None:
        """The most sinter processes per batch that make sense here (None: no limit known)."""
        return None

    def check_options(self, options: BackendOptions) -> None:
        """Refuse settings that cannot work, with one line naming the flag."""
        if not (0 < options.sync_seconds <= MAX_SYNC_SECONDS):
            raise KilnError(f"--sync-seconds {options.sync_seconds:g}: must be positive and at "
                            f"most {MAX_SYNC_SECONDS:g} (one day)")
        most = self.max_processes(options)
        if options.processes is not None and most is not None and options.processes > most:
            raise KilnError(f"--processes {options.processes}: more than {most} sinter processes "
                            f"per batch on the {self.name} backend (4x the cores); use fewer, "
                            "or auto")

    def live_fragments(self, bucket_url: str, sweep: str) -> dict[str, bytes]:
        """Resume files of batches this machine runs, newer than their fragments may be
        (``status`` prefers them when they hold more shots); {} when none are here."""
        return {}

    def bucket_problem(self, bucket_url: str) -> str | None:
        """Why this backend's batches could not reach ``bucket_url``, or None."""
        return None

    @classmethod
    def has_pools(cls) -> bool:
        """Whether this backend keeps pools of warm workers (it answers :meth:`pool_command`)."""
        return cls.pool_command is not Backend.pool_command

    def pool_command(self, action: str, name: str | None) -> list[str]:
        """``qec-kiln pool status|down [NAME]``: lines to print. Backends without pools refuse."""
        raise KilnError(f"the {self.name} backend has no pools of warm workers")

    def state_running(self, folder: pathlib.Path) -> bool:
        """Whether a job recorded in ``folder`` (this backend's local state of one sweep, under
        ``$QEC_KILN_HOME/<backend>/``) still runs here; ``qec-kiln clean`` keeps such folders."""
        return False

    def open_bucket(self, url: str, *, must_reach: bool, launching: bool,
                    log: Log) -> Bucket:
        """The bucket this backend's batches would write to, checked before anything is
        planned: what this machine lacks to launch (``launching``), a bucket the batches could
        not reach, a bucket that cannot be read. Refused when ``must_reach``; else (a dry run
        or a plan) a warning, and an unreachable bucket reads as empty."""
        from qec_kiln._errors import StorageError
        from qec_kiln._storage import open_bucket

        if launching and (ready := self.launch_problem()):
            raise KilnError(ready)
        problem = self.bucket_problem(url)
        if problem:
            if must_reach:
                raise KilnError(problem)
            log("warning: " + problem)
        bucket = open_bucket(url)
        try:
            bucket.check_access()
        except StorageError as ex:
            if must_reach:
                raise
            log(f"warning: {ex} (showing a fresh plan; nothing is uploaded)")
            return _NoBucket(bucket.url)  # type: ignore[return-value]  # .url, .exists(), .list_keys()
        return bucket

    def launch_problem(self) -> str | None:
        """Why this machine cannot launch (or render) with this backend, e.g. a missing package;
        asked before anything is planned or uploaded. None when it can."""
        return None

    def warnings(self) -> list[str]:
        """What the last ``job_states`` could not find out (shown by ``status``)."""
        return []

    # ------------------------------------------------------------------ jobs

    def describe_json(self, request: LaunchRequest) -> dict[str, Any]:
        """Machine-readable parts of the dry run (``launch --dry-run --json`` under backend)."""
        return {}

    @abc.abstractmethod
    def describe(self, request: LaunchRequest) -> str:
        """Human-readable dry run: rendered job files and the exact commands ``launch`` would run."""

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> Submission:
        """Start the batches in ``request.batch_ids``; raise KilnError before starting anything wrong."""

    @abc.abstractmethod
    def job_states(self, bucket_url: str, sweep: str) -> dict[str, JobState]:
        """The current state of each batch's job that this backend knows of (may be empty)."""

    @abc.abstractmethod
    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        """Stop every job of the sweep, leaving fragments intact; return what was cancelled."""


def quote_argv(argv: Sequence[str]) -> str:
    """One shell line for display.

    >>> quote_argv(["sinter", "collect", "--circuits", "d=3 $(rm -rf).stim"])
    "sinter collect --circuits 'd=3 $(rm -rf).stim'"
    """
    return " ".join(shlex.quote(a) for a in argv)


def kiln_home() -> pathlib.Path:
    """Where qec-kiln keeps local state (rendered job files, local job records):
    ``$QEC_KILN_HOME`` or ``~/.cache/qec-kiln``."""
    env = os.environ.get("QEC_KILN_HOME")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "qec-kiln"


def last_line(text: str | None) -> str:
    """The last non-blank line of a command's output (for one-line error messages).

    >>> last_line(chr(10).join(["a", "  b  ", ""]))
    'b'
    """
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def read_launch_records(path: pathlib.Path) -> list[dict]:
    """The launch records a backend keeps in ``path`` (a JSON list); [] when there are none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise KilnError(f"{path}: unreadable launch record ({e}); move it away to start afresh"
                        ) from e
    if not isinstance(data, list):
        raise KilnError(f"{path}: not a list of launch records; move it away to start afresh")
    return [x for x in data if isinstance(x, dict)]


def append_launch_record(path: pathlib.Path, record: dict) -> None:
    """Add one record to ``path``, replacing the file atomically."""
    records = read_launch_records(path)
    records.append(record)
    atomic_write(path, json.dumps(records, indent=1) + "\n")

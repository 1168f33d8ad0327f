"""The one interface every backend (local, skypilot, slurm) implements.

A backend only starts, watches and stops *batches*; discovery, planning, uploading the sweep to the
bucket and merging are the same for all of them. On every node the batch runs the same command::

    qec-kiln run-batch --bucket URL --sweep NAME --batches b000,b003 --index "$RANK"

which picks ``batches[index]`` (or ``--batch b003`` directly).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import pathlib
import shlex
from collections.abc import Sequence

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import KilnError


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Launch knobs from the command line; each backend reads the ones that concern it."""

    parallel: int | None = None  # local: batches at once (default: as many as cores allow)
    processes: int | None = None  # sinter --processes per batch (default: the node's cores)
    sync_seconds: float = 30.0  # how often run-batch uploads complete lines of its resume CSV
    cpus: str | None = None  # skypilot/slurm: e.g. "16+" or "8"
    gpus: str | None = None  # skypilot: accelerators, e.g. "H100:1"
    infra: str | None = None  # skypilot: e.g. "aws", "gcp/us-central1", "k8s"
    use_spot: bool = True  # skypilot: spot by default
    yaml_path: str | None = None  # skypilot: task YAML to fill in (default configs/sinter_job*.yaml)
    partition: str | None = None  # slurm
    account: str | None = None  # slurm
    time_limit: str | None = None  # slurm, e.g. "04:00:00"
    sbatch_template: str | None = None  # slurm: template to fill in (default configs/sinter_job.sbatch)
    extra_sbatch: tuple[str, ...] = ()  # slurm: extra "#SBATCH ..." option strings
    work_dir: str | None = None  # local: where batches keep their resume files


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """Everything a backend needs to start some batches of a sweep."""

    bucket_url: str
    sweep: str
    batch_ids: tuple[str, ...]
    options: BackendOptions
    num_batches_total: int = 0
    kiln_version: str = ""

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
class LaunchResult:
    """What was started: one job id per batch (or one array id for all), and the commands used."""

    job_ids: dict[str, str]
    commands: list[list[str]]
    message: str = ""
    failed: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False


@dataclasses.dataclass
class JobState:
    """A batch's job as its backend sees it."""

    batch_id: str
    state: str  # e.g. RUNNING, PENDING, SUCCEEDED, FAILED, CANCELLED, RECOVERING, UNKNOWN
    job_id: str = ""
    recoveries: int | None = None
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.state.upper() in ACTIVE_STATES


ACTIVE_STATES = frozenset(
    {"PENDING", "STARTING", "RUNNING", "RECOVERING", "SUBMITTED", "CONFIGURING", "REQUEUED",
     "CANCELLING"}
)


class Backend(abc.ABC):
    """Starts, watches and stops the batches of a sweep on one kind of infrastructure."""

    name: str = ""

    @abc.abstractmethod
    def describe(self, request: LaunchRequest) -> str:
        """Human-readable dry run: rendered job files and the exact commands ``launch`` would run."""

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> LaunchResult:
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

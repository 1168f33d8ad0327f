"""Slurm backend: the batches of a sweep are the tasks of ONE Slurm job array.

``launch`` fills in ``configs/sinter_job.sbatch`` (or ``--sbatch-template``), writes it to the state
directory ``$QEC_KILN_HOME/slurm/<sweep>/job.sbatch`` (default ``~/.cache/qec-kiln``) and runs::

    sbatch --parsable <state dir>/job.sbatch

Array task k (``SLURM_ARRAY_TASK_ID=k``) runs batch k of the request::

    exec qec-kiln run-batch --bucket URL --sweep NAME --batches b000,b003 \\
        --index "$SLURM_ARRAY_TASK_ID" --sync-seconds 30 --processes <cpus per task>

Each launch is appended to ``<state dir>/launches.json`` (bucket, array job id, batches in task
order, script and log paths), which is how ``job_states`` and ``cancel`` find the sweep's jobs.
``job_states`` asks ``squeue`` (``--array --states=all``: live tasks, and finished ones while
slurmctld still keeps them, ``MinJobAge``, 300 s by default) and then ``sacct`` for the rest; when
accounting is disabled (``sacct`` exits non-zero) those batches are simply left out, and status
shows their fragments' progress only. ``cancel`` runs ``scancel <array job id>``: Slurm sends
SIGTERM to each running task's batch shell, which ``exec`` made run-batch itself, so it uploads
its complete lines; SIGKILL follows after the cluster's ``KillWait`` (30 s by default).

What Slurm does on its own (checked on Slurm 22.05, see ``tests/test_slurm_cluster.py``): a task on
a node that fails, or a preempted one, is requeued because of ``--requeue`` and starts again from
the top of the script (it resumes from its fragment); a task that fails or is killed by itself is
not. ``qec-kiln launch`` again relaunches the unfinished, inactive batches as a new array.

Every command is an argv list (never a shell string); every value in the script is shell-quoted,
or checked to be plain where it must stand unquoted (``#SBATCH`` lines).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qec_kiln._atomic import atomic_write
from qec_kiln._backends.base import (
    ACTIVE_STATES,
    BackendOptions,
    JobState,
    LaunchRequest,
    Submission,
    append_launch_record,
    kiln_home,
    last_line,
    quote_argv,
    read_launch_records,
)
from qec_kiln._backends.remote import (
    RemoteBackend,
    kiln_version,
    read_template,
    rendered_by,
    short_digest,
)
from qec_kiln._backends.slurm.options import SlurmOptions
from qec_kiln._backends.slurm.parse import (
    check_account,
    check_extra_option,
    check_partition,
    id_key,
    parse_cpus,
    parse_parsable,
    parse_sacct,
    parse_squeue,
    plain_path,
    time_limit_minutes,
)
from qec_kiln._errors import KilnError

DEFAULT_TEMPLATE = "sinter_job.sbatch"
INDEX_VAR = "SLURM_ARRAY_TASK_ID"
PLACEHOLDERS = (
    "job_name", "array", "cpus_per_task", "log_dir", "sbatch_options", "python_bin", "bucket",
    "sweep", "batches", "version", "run_batch",
)
_PLACEHOLDER_RE = re.compile(r"(?<!\$)\{([a-z_]+)\}")
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_SUBMIT_TIMEOUT_S = 120.0
_QUERY_TIMEOUT_S = 60.0

# Slurm job states -> the vocabulary of JobState (see _base.ACTIVE_STATES).
_STATE_MAP = {
    "PENDING": "PENDING",
    "CONFIGURING": "CONFIGURING",
    "RUNNING": "RUNNING",
    "COMPLETING": "RUNNING",
    "SUSPENDED": "RUNNING",
    "STOPPED": "RUNNING",
    "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING",
    "RESIZING": "RUNNING",
    "REQUEUED": "REQUEUED",
    "REQUEUE_FED": "REQUEUED",
    "REQUEUE_HOLD": "PENDING",
    "RESV_DEL_HOLD": "PENDING",
    "COMPLETED": "SUCCEEDED",
    "CANCELLED": "CANCELLED",
    "FAILED": "FAILED",
    "TIMEOUT": "FAILED",
    "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED",
    "DEADLINE": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "PREEMPTED": "FAILED",
    "SPECIAL_EXIT": "FAILED",
    "REVOKED": "CANCELLED",
}


def safe_name(sweep: str) -> str:
    """The sweep name as used in the job name and the state folder: plain, or made plain.

    >>> safe_name("surface-d3_to_d13.v2")
    'surface-d3_to_d13.v2'
    >>> safe_name("my sweep/$(x)")
    'my-sweep-x-87ea4bda'
    """
    if not sweep:
        raise KilnError("the sweep name is empty; give a name with --name")
    plain = re.sub(r"[^A-Za-z0-9._-]+", "-", sweep).strip("-.") or "sweep"
    if plain != sweep or len(sweep) > 80:
        plain = plain[:60].rstrip("-.") + "-" + short_digest(sweep)
    return plain


def array_spec(num_batches: int, workers: int | None) -> str:
    """``--array`` of ``num_batches`` tasks, at most ``workers`` running at once (Slurm's ``%K``
    throttle: the next task starts when one ends).

    >>> array_spec(8, 2), array_spec(3, None), array_spec(3, 5)
    ('0-7%2', '0-2', '0-2')
    """
    spec = f"0-{num_batches - 1}"
    return f"{spec}%{workers}" if workers and workers < num_batches else spec


def job_name(sweep: str) -> str:
    """``kiln-<sweep>``: the Slurm job name of a sweep's array."""
    return "kiln-" + safe_name(sweep)


def state_dir(sweep: str) -> Path:
    """Where the rendered script, the launch record and the task logs of a sweep live."""
    return kiln_home().expanduser() / "slurm" / safe_name(sweep)


# --------------------------------------------------------------------------------------------
# rendering


@dataclasses.dataclass
class Rendered:
    """A filled-in sbatch script and the command that submits it."""

    script: str
    script_path: Path
    sbatch_argv: list[str]
    source: str  # the template it came from (a path, or "packaged:<name>")
    job_name: str
    log_dir: Path
    cpus_per_task: int
    notes: list[str]


def render_template(template: str, values: dict[str, str], source: str) -> str:
    """Replace each ``{name}`` (not ``${name}``) by ``values[name]``; unknown names are refused.

    A line holding only a placeholder whose value is empty disappears.

    >>> render_template("#SBATCH --array={array}\\n{sbatch_options}\\necho ${HOME}\\n",
    ...                 {"array": "0-2", "sbatch_options": ""}, "t")
    '#SBATCH --array=0-2\\necho ${HOME}\\n'
    """
    unknown = sorted({m.group(1) for m in _PLACEHOLDER_RE.finditer(template)} - set(values))
    if unknown:
        raise KilnError(
            f"{source}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    lines = []
    for line in template.splitlines(keepends=True):
        m = _PLACEHOLDER_RE.fullmatch(line.strip())
        if m and values[m.group(1)] == "":
            continue
        lines.append(_PLACEHOLDER_RE.sub(lambda mm: values[mm.group(1)], line))
    return "".join(lines)


class SlurmBackend(RemoteBackend):
    """Batches as the tasks of one Slurm job array per launch.

    ``runner`` replaces the function that runs ``sbatch``/``squeue``/``sacct``/``scancel``
    (tests). ``job_states`` never raises when Slurm cannot be asked: it returns what it knows and
    leaves the reason in ``self.warning``.
    """

    name = "slurm"
    options_type = SlurmOptions

    @classmethod
    def options(cls, value: BackendOptions | Mapping[str, Any] | None = None) -> SlurmOptions:
        opts = super().options(value)
        assert isinstance(opts, SlurmOptions)
        return opts
    startup_seconds = 30.0
    queue_workers = True  # the array's %K throttle: Slurm starts the next task when one ends

    def missing_command(self, argv: Sequence[str], what: str) -> str:
        return (f"cannot {what} Slurm jobs: `{argv[0]}` was not found; run qec-kiln on a Slurm "
                "login node (or install the Slurm client commands)")

    # ------------------------------------------------------------------ rendering

    def warnings(self) -> list[str]:
        return super().warnings() + ([self.bucket_warning] if self.bucket_warning else [])

    #: Set by :meth:`render` when the bucket is a path on this machine (see :meth:`warnings`).
    bucket_warning: str = ""

    def render(self, request: LaunchRequest) -> Rendered:
        opts = self.options(request.options)
        url = request.bucket_url
        if "://" not in url or url.startswith("file://"):
            self.bucket_warning = (
                f"--bucket {url} is a folder of this machine: every Slurm node must see it at "
                "the same path (a shared file system), or use an s3:// or gs:// bucket")
        if not request.batch_ids:
            raise KilnError("no batches to launch")
        bad = [b for b in request.batch_ids if not _PLAIN_NAME_RE.fullmatch(b)]
        if bad:
            raise KilnError(f"batch id {bad[0]!r} is not plain (letters, digits, '.', '_', '-')")
        for value, what in ((request.bucket_url, "bucket"), (request.sweep, "sweep name")):
            if any(ord(ch) < 32 for ch in value):
                raise KilnError(f"the {what} {value!r} holds control characters")

        source, template = read_template(opts.sbatch_template, DEFAULT_TEMPLATE,
                                         "sbatch template")
        if not template.startswith("#!"):
            raise KilnError(f"{source}: an sbatch script must start with an interpreter line such "
                            "as #!/bin/bash")
        if not re.search(r"(?<!\$)\{run_batch\}", template):
            raise KilnError(f"{source}: the template has no {{run_batch}} placeholder, so its tasks "
                            "would run nothing; keep the line `exec {run_batch}`")
        if not re.search(r"^#SBATCH\s+(--array=|-a\s*)\{array\}", template, re.MULTILINE):
            raise KilnError(f"{source}: the template needs the line `#SBATCH --array={{array}}` "
                            "(one array task per batch)")

        notes: list[str] = []
        cpus = parse_cpus(opts.cpus, opts.processes)
        if opts.cpus and str(opts.cpus).strip().endswith("+"):
            notes.append(f"--cpus {opts.cpus}: Slurm takes an exact count; asking for {cpus} "
                         "CPUs per task")
        if not opts.processes:
            # run-batch's default (all the node's cores) would oversubscribe a shared node.
            opts = dataclasses.replace(opts, processes=cpus)
            request = dataclasses.replace(request, options=opts)
        sbatch_lines: list[str] = []
        if opts.partition:
            sbatch_lines.append(f"#SBATCH --partition={check_partition(opts.partition.strip())}")
        if opts.account:
            sbatch_lines.append(f"#SBATCH --account={check_account(opts.account.strip())}")
        if opts.time_limit:
            minutes = time_limit_minutes(opts.time_limit)
            sbatch_lines.append(f"#SBATCH --time={opts.time_limit.strip()}")
            if minutes is not None and minutes < 3:
                notes.append(f"--time {opts.time_limit}: under 3 minutes, the SIGTERM that comes "
                             "60 s (or up to 2 minutes) before the limit may arrive right away")
        sbatch_lines += [check_extra_option(x) for x in opts.extra_sbatch]

        state = state_dir(request.sweep)
        log_dir = state / "logs"
        script_path = state / "job.sbatch"
        version = request.kiln_version or kiln_version()
        values = {
            "job_name": job_name(request.sweep),
            "array": array_spec(len(request.batch_ids), opts.workers),
            "cpus_per_task": str(cpus),
            "log_dir": plain_path(log_dir, "the log folder"),
            "sbatch_options": "\n".join(sbatch_lines),
            "python_bin": shlex.quote(str(Path(sys.executable).parent)),
            "bucket": shlex.quote(request.bucket_url),
            "sweep": shlex.quote(request.sweep),
            "batches": shlex.quote(",".join(request.batch_ids)),
            "version": shlex.quote(version),
            "run_batch": request.run_batch_shell(INDEX_VAR),
        }
        script = render_template(template, values, source)
        if not script.endswith("\n"):
            script += "\n"
        first, _, rest = script.partition("\n")
        script = f"{first}\n{rendered_by(version, source)}{rest}"
        return Rendered(
            script=script, script_path=script_path,
            sbatch_argv=["sbatch", "--parsable", str(script_path)], source=source,
            job_name=values["job_name"], log_dir=log_dir, cpus_per_task=cpus, notes=notes,
        )

    # ------------------------------------------------------------------ Backend API

    def describe(self, request: LaunchRequest) -> str:
        r = self.render(request)
        lines = [
            f"# sbatch script from {r.source}; launch writes it to {r.script_path}",
            r.script.rstrip("\n"),
            "",
            *(f"# Note: {n}" for n in r.notes),
            f"# One job array named {r.job_name}, {len(request.batch_ids)} task(s) of "
            f"{r.cpus_per_task} CPU(s)"
            + (f", at most {request.options.workers} at once" if request.options.workers else "")
            + "; task k runs batch k (Slurm starts them in that order, longest first):",
            "#   " + " ".join(f"{k}={b}" for k, b in enumerate(request.batch_ids)),
            f"# Task logs: {r.log_dir}/<array job id>_<task>.out",
            quote_argv(r.sbatch_argv),
        ]
        return "\n".join(lines) + "\n"

    def launch(self, request: LaunchRequest) -> Submission:
        r = self.render(request)
        r.log_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(r.script_path, r.script)
        proc = self._call(r.sbatch_argv, timeout=_SUBMIT_TIMEOUT_S, what="submit")
        if proc.returncode != 0:
            raise KilnError(f"sbatch failed (exit {proc.returncode}) for {r.script_path}: "
                            f"{last_line(proc.stderr) or last_line(proc.stdout) or 'no output'}")
        array_id = parse_parsable(proc.stdout)
        # Keep a copy per array: job.sbatch is overwritten by the next launch of this sweep.
        kept = r.script_path.with_name(f"job-{array_id}.sbatch")
        kept.write_text(r.script, encoding="utf-8")
        append_launch_record(state_dir(request.sweep) / "launches.json", {
            "bucket": request.bucket_url,
            "sweep": request.sweep,
            "array_job_id": array_id,
            "batches": list(request.batch_ids),
            "script": str(kept),
            "log_dir": str(r.log_dir),
            "slurm_conf": os.environ.get("SLURM_CONF", ""),
            "launched_at": time.time(),
        })
        job_ids = {b: f"{array_id}_{k}" for k, b in enumerate(request.batch_ids)}
        message = (f"submitted Slurm job array {array_id} ({r.job_name}, {len(job_ids)} task(s)); "
                   f"logs in {r.log_dir}/{array_id}_<task>.out")
        return Submission(job_ids=job_ids, commands=[list(r.sbatch_argv)], message=message)

    def job_states(self, bucket_url: str, sweep: str) -> dict[str, JobState]:
        """Each launched batch's task state from ``squeue``, else ``sacct``; ``{}`` if unknown.

        A batch launched twice reports its newest task.
        """
        self.warning = ""
        launches = self._launches(bucket_url, sweep)
        if not launches:
            return {}
        tasks = {(str(x["array_job_id"]), k): str(b)
                 for x in launches for k, b in enumerate(x.get("batches") or [])}
        ids = sorted({a for a, _ in tasks}, key=id_key)
        found = self._squeue(ids)
        missing = sorted({a for (a, k) in tasks if (a, k) not in found}, key=id_key)
        if missing:
            found.update({key: v for key, v in self._sacct(missing).items() if key not in found})
        states: dict[str, JobState] = {}
        for x in launches:  # oldest first: a later launch of a batch wins
            array_id = str(x["array_job_id"])
            for k, batch in enumerate(x.get("batches") or []):
                info = found.get((array_id, k))
                if info is None:
                    continue
                raw, reason, restarts = info
                state = _STATE_MAP.get(raw, "UNKNOWN")
                detail = raw if state != raw else ""
                if reason and reason not in ("None", "(null)"):
                    detail = f"{detail} ({reason})" if detail else reason
                states[str(batch)] = JobState(batch_id=str(batch), state=state,
                                              job_id=f"{array_id}_{k}", recoveries=restarts,
                                              detail=detail)
        return states

    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        """``scancel`` every array of the sweep that still has a pending or running task."""
        launches = self._launches(bucket_url, sweep)
        ids = sorted({str(x["array_job_id"]) for x in launches}, key=id_key)
        if not ids:
            return []
        active = sorted({a for (a, _), (raw, _, _) in self._squeue(ids, strict=True).items()
                         if _STATE_MAP.get(raw, "UNKNOWN") in ACTIVE_STATES}, key=id_key)
        if not active:
            return []
        argv = ["scancel", *active]
        proc = self._call(argv, timeout=_QUERY_TIMEOUT_S, what="cancel")
        if proc.returncode != 0:
            raise KilnError(f"`{quote_argv(argv)}` failed (exit {proc.returncode}): "
                            f"{last_line(proc.stderr) or 'no output'}")
        return active

    # ------------------------------------------------------------------ plumbing

    def squeue_argv(self, ids: Sequence[str]) -> list[str]:
        return ["squeue", "--array", "--noheader", "--states=all", f"--jobs={','.join(ids)}",
                "--Format=JobArrayID:|,State:|,Reason:|,RestartCnt:|"]

    def sacct_argv(self, ids: Sequence[str]) -> list[str]:
        return ["sacct", "--allocations", "--noheader", "--parsable2", f"--jobs={','.join(ids)}",
                "--format=JobID,State,ExitCode"]

    def _launches(self, bucket_url: str, sweep: str) -> list[dict]:
        records = read_launch_records(state_dir(sweep) / "launches.json")
        return [x for x in records
                if x.get("sweep") in (None, sweep) and x.get("bucket") in (None, bucket_url)
                and x.get("array_job_id")]

    def _squeue(self, ids: list[str], strict: bool = False
                ) -> dict[tuple[str, int], tuple[str, str, int | None]]:
        argv = self.squeue_argv(ids)
        try:
            proc = self._call(argv, timeout=_QUERY_TIMEOUT_S, what="list")
        except KilnError as e:
            if strict:
                raise
            self.warning = f"Slurm job states unavailable: {e}"
            return {}
        if proc.returncode != 0:
            text = last_line(proc.stderr) or last_line(proc.stdout) or "no output"
            # squeue refuses a list whose jobs are all gone ("Invalid job id specified").
            if "invalid job id" in text.lower():
                return {}
            if strict:
                raise KilnError(f"`{quote_argv(argv)}` failed (exit {proc.returncode}): {text}")
            self.warning = f"Slurm job states unavailable (squeue exit {proc.returncode}): {text}"
            return {}
        return parse_squeue(proc.stdout)

    def _sacct(self, ids: list[str]) -> dict[tuple[str, int], tuple[str, str, int | None]]:
        try:
            proc = self._call(self.sacct_argv(ids), timeout=_QUERY_TIMEOUT_S, what="list")
        except KilnError:
            return {}
        if proc.returncode != 0:
            # "Slurm accounting storage is disabled": finished tasks are then unknown here.
            return {}
        return parse_sacct(proc.stdout)

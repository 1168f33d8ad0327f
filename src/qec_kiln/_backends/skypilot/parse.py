"""Reading SkyPilot's answers: job ids from ``sky jobs launch`` output, the typed records of
``sky.jobs.queue_v2`` (``sky.schemas.api.responses.ManagedJobRecord``), and which batch each
queued job runs."""

from __future__ import annotations

import re
from typing import Any

from qec_kiln._backends.jobs import JobState
from qec_kiln._errors import Exit


def sky_state(status: str) -> str:
    """A SkyPilot ManagedJobStatus (sky/jobs/state.py) in JobState's vocabulary: the same word,
    except WINDING_DOWN (still active in SkyPilot), which is RUNNING.

    >>> sky_state("winding_down"), sky_state("SUCCEEDED")
    ('RUNNING', 'SUCCEEDED')
    """
    status = status.upper()
    return "RUNNING" if status == "WINDING_DOWN" else status


def parse_job_ids(output: str) -> list[int]:
    """Job ids from ``sky jobs launch`` output (ANSI codes already removed).

    >>> parse_job_ids("Jobs submitted with IDs: 4-6,9.")
    [4, 5, 6, 9]
    >>> parse_job_ids("📋 Useful Commands\\nManaged Job ID: 12\\n")
    [12]
    """
    for pattern in (r"Jobs submitted with IDs:\s*([0-9][0-9,\- ]*)",
                    r"Managed Job ID:\s*([0-9]+)",
                    r"Job submitted, ID:\s*([0-9][0-9,\-]*)"):
        found = re.findall(pattern, output)
        if found:
            return _expand_ranges(found[-1])
    return []


def _expand_ranges(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.replace(" ", "").strip(",-").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        ids += list(range(int(lo), int(hi or lo) + 1))
    return ids


#: Why a job failed or waits, which ``sky.jobs.queue_v2``'s default fields leave out
#: (``sky/jobs/constants.py``).
EXTRA_QUEUE_FIELDS = ("details", "failure_reason")
#: All that ``sky.jobs.queue_v2`` is asked for: the fields status, cancel and the pool warning
#: read (a queue of thousands of jobs answers faster without resources, durations, groups...).
QUEUE_FIELDS = ("job_id", "task_id", "job_name", "status", "submitted_at", "recovery_count",
                "pool", "end_at", "job_duration", *EXTRA_QUEUE_FIELDS)


def record_dict(rec: Any) -> dict[str, Any]:
    """A queue record (SkyPilot's ``ManagedJobRecord`` or a plain dict) as a dict whose
    ``status`` is the status's name.

    >>> record_dict({"job_id": 3, "status": "RUNNING"})
    {'job_id': 3, 'status': 'RUNNING'}
    """
    d = rec.model_dump() if hasattr(rec, "model_dump") else dict(rec)
    status = d.get("status")
    d["status"] = getattr(status, "value", status)
    return d


def map_queue_to_batches(
    records: list[dict[str, Any]], name: str, launches: list[dict[str, Any]]
) -> tuple[dict[str, JobState], list[int]]:
    """Batch -> JobState for the queue records named ``name``; also the ids of unmapped jobs.

    A launch record lists its batches in rank order and the job ids SkyPilot gave back; rank k
    is the k-th smallest id. A record without ids (output not parsed) takes the first jobs of
    that name submitted after it started. A later launch of a batch wins over an earlier one.
    """
    by_id: dict[int, dict[str, Any]] = {}
    for rec in records:
        if rec.get("job_name") != name or rec.get("job_id") is None:
            continue
        jid = int(rec["job_id"])
        # A pipeline has one record per task; ours have one task. Keep the first (task 0).
        if jid not in by_id or (rec.get("task_id") or 0) < (by_id[jid].get("task_id") or 0):
            by_id[jid] = rec
    claimed: dict[int, str] = {}
    for launch in sorted(launches, key=lambda x: x.get("launched_at") or 0):
        batches = [str(b) for b in launch.get("batches") or []]
        ids = sorted(int(i) for i in launch.get("job_ids") or [])
        if not ids:
            since = float(launch.get("launched_at") or 0) - 5.0
            free = sorted(
                i for i, rec in by_id.items()
                if i not in claimed and float(rec.get("submitted_at") or 0) >= since
            )
            ids = free[: len(batches)] if len(free) >= len(batches) else []
        if len(ids) != len(batches):
            continue
        for jid, batch in zip(ids, batches, strict=True):
            claimed[jid] = batch
    states: dict[str, JobState] = {}
    newest: dict[str, int] = {}
    for jid, batch in claimed.items():
        found = by_id.get(jid)
        if found is None or newest.get(batch, -1) > jid:
            continue
        rec = found
        newest[batch] = jid
        states[batch] = _job_state(batch, jid, rec)
    unknown = sorted(i for i in by_id if i not in claimed)
    return states, unknown


#: What run-batch's exit codes mean (``qec_kiln._node.runner``; 75 is retried by the task YAML).
_EXIT_MEANINGS: dict[int, str] = {
    Exit.USAGE: "run-batch refused its input (configuration, bucket access or versions)",
    Exit.CONFLICT: "another run-batch holds this batch",
    Exit.UPLOAD_FAILED: "the final upload failed",
}


def explain_failure(reason: str, job_id: int) -> str:
    """SkyPilot's failure reason, with what a run-batch exit code in it means and where the
    job's own ``error:`` line is.

    >>> explain_failure("Job exited with exit code 2. To see the details, run: "
    ...                 "sky jobs logs --controller 7", 7)  # doctest: +NORMALIZE_WHITESPACE
    'Job exited with exit code 2. To see the details, run: sky jobs logs --controller 7 (exit 2:
    run-batch refused its input (configuration, bucket access or versions); its error: line is
    in `sky jobs logs 7`)'
    """
    found = re.search(r"exit codes? \[?(\d+)", reason)
    if found is None or not (meaning := _EXIT_MEANINGS.get(int(found.group(1)))):
        return reason
    return f"{reason} (exit {found.group(1)}: {meaning}; its error: line is in `sky jobs logs {job_id}`)"


def _job_state(batch: str, jid: int, rec: dict[str, Any]) -> JobState:
    raw = str(rec.get("status") or "UNKNOWN").upper()
    status = sky_state(raw)
    # failure_reason: SkyPilot's own line for a failed job; details: why it recovers or waits.
    detail = explain_failure(str(rec.get("failure_reason") or rec.get("details") or ""), jid)
    if raw == "WINDING_DOWN":
        detail = detail or "winding down"
    recoveries = rec.get("recovery_count")
    return JobState(
        batch_id=batch,
        state=status,
        job_id=str(jid),
        recoveries=int(recoveries) if recoveries is not None else None,
        detail=str(detail),
    )


#: Memory of SkyPilot's default jobs controller VM (``cpus: 4+``, ``memory: 8x``).
DEFAULT_CONTROLLER_MEMORY_GB = 32.0


def controller_limits(memory_gb: float = DEFAULT_CONTROLLER_MEMORY_GB) -> tuple[int, int]:
    """(jobs launching at once, jobs running at once) on a jobs controller VM of ``memory_gb``,
    by SkyPilot's own formulas and constants (``sky/utils/controller_utils.py``
    ``_get_parallelism``, ``get_number_of_jobs_controllers``; ``sky/jobs/controller.py``).

    >>> controller_limits(32.0), controller_limits(16.0)
    ((24, 600), (8, 200))
    """
    from sky.server import config as server_config
    from sky.utils import controller_utils as cu

    headroom = cu.MAXIMUM_CONTROLLER_RESERVED_MEMORY_MB * (1 + cu.POOL_JOBS_RESOURCES_RATIO)
    per_process = (1 + cu.POOL_JOBS_RESOURCES_RATIO) * (
        cu.JOB_WORKER_MEMORY_MB + cu.LAUNCHES_PER_WORKER * server_config.LONG_WORKER_MEM_GB * 1024)
    processes = min(cu.MAX_CONTROLLERS, max(1, int((memory_gb * 1024 - headroom) / per_process)))
    running = processes * min(cu.MAX_JOBS_PER_WORKER, cu.MAX_TOTAL_RUNNING_JOBS // processes)
    return processes * cu.LAUNCHES_PER_WORKER, running


def controller_warnings(jobs_at_once: int, batches: int) -> list[str]:
    """What to do when a sweep asks more of the default jobs controller than it runs at once."""
    launching, running = controller_limits()
    out = []
    if jobs_at_once > running:
        out.append(
            f"{jobs_at_once} managed jobs at once is more than SkyPilot's default jobs controller "
            f"runs ({running} at once, {launching} launching at a time; at most "
            f"{_max_total()} on any controller): the rest wait PENDING. Use a pool "
            f"(--workers K, K <= {running}: {batches} batches queue on K warm workers) or a "
            "bigger controller (jobs: controller: resources: memory: 64+ in ~/.sky/config.yaml)")
    elif jobs_at_once > launching:
        out.append(
            f"{jobs_at_once} managed jobs start {launching} at a time on SkyPilot's default jobs "
            f"controller (about {-(-jobs_at_once // launching)} rounds of VM launches); a pool "
            "(--workers K) or a bigger controller starts them sooner")
    return out


def _max_total() -> int:
    from sky.utils import controller_utils

    return int(controller_utils.MAX_TOTAL_RUNNING_JOBS)

"""Reading SkyPilot's answers: job ids from ``sky jobs launch`` output, the records of ``sky jobs
queue -o json``, and which batch each queued job runs."""

from __future__ import annotations

import json
import re
from typing import Any

from qec_kiln._backends._base import JobState


def _sky_state(status: str) -> str:
    """A SkyPilot ManagedJobStatus (sky/jobs/state.py) in JobState's vocabulary: the same word,
    except WINDING_DOWN (still active in SkyPilot), which is RUNNING.

    >>> _sky_state("winding_down"), _sky_state("SUCCEEDED")
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


def parse_queue_json(text: str) -> list[dict[str, Any]]:
    """The record list printed by ``sky jobs queue -o json`` (skipping any lines before it)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\s*\[", text, re.MULTILINE):
        try:
            value, _ = decoder.raw_decode(text, match.end() - 1)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return value
    raise ValueError("`sky jobs queue -o json` printed no JSON list of jobs")


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


def _job_state(batch: str, jid: int, rec: dict[str, Any]) -> JobState:
    raw = str(rec.get("status") or "UNKNOWN").upper()
    status = _sky_state(raw)
    detail = rec.get("failure_reason") or rec.get("details") or ""
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

"""What a SkyPilot plan assumes about each batch's job, from the task itself and from earlier runs.

- :func:`processes_from_task`: sinter processes per batch from ``--cpus``, else the
  ``resources.cpus`` of the task YAML (``--yaml``, or the packaged one): a ``cpus: 1`` task plans
  one process, not 16.
- :func:`measured_startup_seconds`: the start-up of a batch's job on an ``--infra`` as measured on
  this machine's earlier runs (``<kiln home>/skypilot/startup.json``), or None before the first.
  ``status`` records it (:func:`record_from_queue`) from SkyPilot's queue: for a job that
  succeeded without a recovery, ``end_at - job_duration - submitted_at`` (queueing and
  provisioning; the node's setup counts in SkyPilot's job duration, and takes seconds with uv).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import yaml

from qec_kiln._atomic import atomic_write
from qec_kiln._backends.base import kiln_home
from qec_kiln._backends.remote import read_template
from qec_kiln._backends.skypilot.options import SkyPilotOptions
from qec_kiln._errors import KilnError

#: Samples kept per infra (the median of these is what a plan assumes).
KEEP = 20


def cpus_count(value: Any) -> int | None:
    """The CPU count of a SkyPilot ``cpus`` value (``4+`` asks for at least 4), or None.

    >>> cpus_count("4+"), cpus_count(8), cpus_count("0.5"), cpus_count(None), cpus_count("x")
    (4, 8, 1, None, None)
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*\+?\s*", str(value)) if value is not None else None
    return max(1, int(float(found.group(1)))) if found else None


def processes_from_task(options: SkyPilotOptions, default_yaml: str) -> int | None:
    """sinter processes per batch that the task's resources give: ``--cpus``, else the task
    YAML's ``resources.cpus`` (top level; ``any_of`` entries are left to SkyPilot), else None."""
    if options.cpus:
        return cpus_count(options.cpus)
    try:
        _, text = read_template(options.yaml_path, default_yaml, "SkyPilot task YAML")
        cfg = yaml.safe_load(text)
    except (KilnError, OSError, yaml.YAMLError):
        return None  # the render reports a bad YAML with its own message
    res = cfg.get("resources") if isinstance(cfg, dict) else None
    return cpus_count(res.get("cpus")) if isinstance(res, dict) else None


def startup_file() -> Path:
    return kiln_home().expanduser() / "skypilot" / "startup.json"


def _infra_key(infra: str | None) -> str:
    return (infra or "").strip().lower() or "default"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(startup_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured_startup_seconds(infra: str | None) -> float | None:
    """The median measured start-up of a batch's job on ``infra``, or None if none was measured.

    >>> measured_startup_seconds("surely-never-measured/region")
    """
    entry = _read().get(_infra_key(infra))
    samples = entry.get("samples") if isinstance(entry, dict) else None
    values = [float(s[1]) for s in samples or [] if isinstance(s, list) and len(s) == 2]
    return statistics.median(values) if values else None


def record_from_queue(records: list[dict[str, Any]], launches: list[dict[str, Any]]) -> None:
    """Record the start-up of every job of ``launches`` that SkyPilot's queue ``records`` show
    succeeded without a recovery (once per job), under the launch's ``infra``. Pool jobs are left
    out: a warm worker's start says nothing about a new VM's."""
    infra_of = {int(i): launch.get("infra") for launch in launches if not launch.get("pool")
                for i in launch.get("job_ids") or []}
    data = _read()
    changed = False
    for rec in records:
        jid = rec.get("job_id")
        if jid is None or int(jid) not in infra_of or str(rec.get("status")) != "SUCCEEDED":
            continue
        if rec.get("recovery_count") or not all(
                isinstance(rec.get(k), int | float) for k in ("submitted_at", "end_at", "job_duration")):
            continue
        seconds = rec["end_at"] - rec["job_duration"] - rec["submitted_at"]
        entry = data.setdefault(_infra_key(infra_of[int(jid)]), {"samples": []})
        tag = f"{jid}@{rec['submitted_at']:.0f}"
        if seconds <= 0 or any(s[0] == tag for s in entry["samples"]):
            continue
        entry["samples"] = [*entry["samples"], [tag, round(seconds, 1)]][-KEEP:]
        changed = True
    if changed:
        atomic_write(startup_file(), json.dumps(data, indent=1) + "\n")

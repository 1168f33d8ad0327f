"""Talking to SkyPilot: job names, the ``sky`` command and the SDK calls that submit.

``import sky`` takes about a second, so it happens only inside the functions that need it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qec_kiln._backends.base import kiln_home
from qec_kiln._backends.jobs import is_active
from qec_kiln._backends.remote import run_command, short_digest
from qec_kiln._backends.skypilot.parse import sky_state
from qec_kiln._errors import KilnError

# SkyPilot's job (and cluster) name rule: sky/skylet/constants.py CLUSTER_NAME_VALID_REGEX.
_SKY_NAME_RE = re.compile(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?")
_MAX_NAME = 63
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")



def job_name(sweep: str) -> str:
    """The SkyPilot managed-job name of a sweep: ``kiln-<sweep>``, made valid for SkyPilot.

    Characters SkyPilot refuses become ``-`` and a short hash of the real name keeps two such
    sweeps apart.

    >>> job_name("surface-d3_to_d13.v2")
    'kiln-surface-d3_to_d13.v2'
    >>> job_name("my sweep/1")
    'kiln-my-sweep-1-82e27a33'
    >>> job_name("d3 to d13; rm")
    'kiln-d3-to-d13-rm-cdd05573'
    """
    if not sweep:
        raise KilnError("the sweep name is empty; give a name with --sweep")
    # SkyPilot also refuses runs of three dashes/underscores in a task name (sky/task.py).
    name = "kiln-" + re.sub(r"[-_.]{2,}", "-", re.sub(r"[^-_.a-zA-Z0-9]", "-", sweep))
    if name != "kiln-" + sweep or not _SKY_NAME_RE.fullmatch(name) or len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 9].rstrip("-_.") + "-" + short_digest(sweep)
    return name


def state_dir(sweep: str) -> Path:
    """Where the rendered YAML and the launch record of a sweep live on this machine."""
    return kiln_home().expanduser() / "skypilot" / job_name(sweep)[len("kiln-"):]


def sky_executable() -> str:
    """The ``sky`` command: on PATH, else next to this Python (an unactivated venv)."""
    found = shutil.which("sky")
    if found:
        return found
    sibling = Path(sys.executable).parent / "sky"
    return str(sibling) if sibling.exists() else "sky"


def import_sky() -> Any:
    """The ``sky`` package, or one KilnError line saying how to install it (an optional extra)."""
    try:
        import sky
    except ImportError as e:
        raise KilnError(
            "--backend skypilot needs SkyPilot, which is not installed here: "
            "pip install 'qec-kiln[skypilot]' (plus your clouds' extras, e.g. 'skypilot[aws]')"
        ) from e
    return sky


def run_sky(
    argv: Sequence[str], *, stream: bool = False, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), finding ``sky`` next to this Python if it is not on PATH."""
    argv = [sky_executable(), *argv[1:]] if argv and argv[0] == "sky" else list(argv)
    return run_command(argv, stream=stream, timeout=timeout)


def active_ids(records: list[dict[str, Any]], name: str) -> list[int]:
    """Ids of the active jobs named ``name``."""
    return sorted({
        int(rec["job_id"]) for rec in records
        if rec.get("job_name") == name and rec.get("job_id") is not None
        and is_active(sky_state(str(rec.get("status") or "")))
    })


def submit_managed_jobs(task: Any, name: str, num_jobs: int, pool: str | None = None
                        ) -> list[int]:
    """``sky.jobs.launch(task, name=, [pool=,] num_jobs=)`` and its job ids: the one call that
    submits."""
    import sky

    try:
        kw: dict[str, Any] = {"pool": pool} if pool else {}
        request_id = sky.jobs.launch(task, name=name, num_jobs=num_jobs, **kw)
        result = sky.stream_and_get(request_id)
    except Exception as e:  # SkyPilot raises its own errors (no API server, no credentials, ...)
        raise KilnError(f"sky.jobs.launch failed for {name}: {one_line(e)}") from e
    ids = result[0] if isinstance(result, tuple) else result
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, list | tuple) else [ids])]


def one_line(e: BaseException) -> str:
    text = ANSI_RE.sub("", str(e)).strip() or type(e).__name__
    return " ".join(text.split())

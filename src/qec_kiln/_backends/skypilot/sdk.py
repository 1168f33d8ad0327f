"""Talking to SkyPilot and writing what it reads: job names, the ``sky`` command and SDK calls
that submit, and the YAML/secret helpers of the skypilot backend (moved out of ``skypilot.py``).

``import sky`` takes about a second, so it happens only inside the functions that need it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from qec_kiln._backends.base import is_active, kiln_home
from qec_kiln._backends.remote import run_command, short_digest
from qec_kiln._backends.skypilot.queue import _sky_state
from qec_kiln._errors import KilnError

# SkyPilot's job (and cluster) name rule: sky/skylet/constants.py CLUSTER_NAME_VALID_REGEX.
_SKY_NAME_RE = re.compile(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?")
_MAX_NAME = 63
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Names whose values are credentials; used only to check that no such value ever lands in a
# rendered file or a command line (the names themselves are fine).
_SECRET_NAME_RE = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY|SESSION|AUTH",
    re.IGNORECASE,
)


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


def _default_runner(
    argv: Sequence[str], *, stream: bool = False, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), finding ``sky`` next to this Python if it is not on PATH."""
    argv = [sky_executable(), *argv[1:]] if argv and argv[0] == "sky" else list(argv)
    return run_command(argv, stream=stream, timeout=timeout)


def _active_ids(records: list[dict[str, Any]], name: str) -> list[int]:
    """Ids of the active jobs named ``name``."""
    return sorted({
        int(rec["job_id"]) for rec in records
        if rec.get("job_name") == name and rec.get("job_id") is not None
        and is_active(_sky_state(str(rec.get("status") or "")))
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
        raise KilnError(f"sky.jobs.launch failed for {name}: {_one_line(e)}") from e
    ids = result[0] if isinstance(result, tuple) else result
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, list | tuple) else [ids])]


def _parse_gpus(spec: str) -> str | dict[str, float | int]:
    """``"H100:1"`` stays a string; ``"H100:1,A100:1"`` becomes ``{"H100": 1, "A100": 1}``."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) <= 1:
        return spec.strip()
    out: dict[str, float | int] = {}
    for part in parts:
        gpu, _, count = part.partition(":")
        try:
            n = float(count) if count else 1
        except ValueError:
            raise KilnError(f"--gpus {spec!r}: {part!r} is not NAME or NAME:COUNT") from None
        out[gpu] = int(n) if float(n).is_integer() else n
    return out


def _refuse_secret_values(source: str, yaml_text: str, argv: Sequence[str]) -> None:
    """Defense in depth: no credential value from the environment may appear in our output."""
    for key, value in os.environ.items():
        if len(value) < 8 or not (_SECRET_NAME_RE.search(key) or key.startswith("AWS_ACCESS")):
            continue
        if value in yaml_text or any(value in a for a in argv):
            raise KilnError(
                f"{source}: the value of ${key} would be written into the job YAML or the "
                f"command line; declare it under 'secrets: {{{key}: null}}' instead"
            )


class _LiteralDumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_presenter)


def _dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.dump(cfg, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=100)


def _one_line(e: BaseException) -> str:
    text = _ANSI_RE.sub("", str(e)).strip() or type(e).__name__
    return " ".join(text.split())

"""Slurm's values: checks of the options that go into ``#SBATCH`` lines, and reading Slurm's
answers (the job id from ``sbatch --parsable``, task states from ``squeue`` and ``sacct``)."""

from __future__ import annotations

import re
from pathlib import Path

from qec_kiln._errors import KilnError

_PARTITION_RE = re.compile(r"[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9._@+-]+")
# Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; or UNLIMITED / INFINITE.
_TIME_RE = re.compile(
    r"(?P<m>\d+)(:(?P<ms>\d{1,2}))?"
    r"|(?P<h>\d+):(?P<hm>\d{1,2}):(?P<hs>\d{1,2})"
    r"|(?P<d>\d+)-(?P<dh>\d{1,2})(:(?P<dm>\d{1,2})(:(?P<ds>\d{1,2}))?)?"
)
_SAFE_PATH_RE = re.compile(r"[A-Za-z0-9._/+@:=,~-]+")
# Options a template or --sbatch-option may not set: they would break the task -> batch mapping
# or what qec-kiln reads back from sbatch.
_FORBIDDEN_EXTRA = ("--array", "-a", "--wrap", "--parsable", "--test-only", "--hold", "-H")

# --------------------------------------------------------------------------------------------
# option checks


def parse_cpus(spec: str | None, processes: int | None) -> int:
    """``--cpus-per-task`` from ``--cpus`` ("8", or "8+" read as 8) else ``--processes`` else 1.

    >>> parse_cpus("16+", None), parse_cpus(None, 4), parse_cpus(None, None)
    (16, 4, 1)
    """
    if spec is None or not str(spec).strip():
        return processes or 1
    m = re.fullmatch(r"\s*(\d+)\+?\s*", str(spec))
    if not m or int(m.group(1)) < 1:
        raise KilnError(
            f"--cpus {spec!r}: Slurm needs a whole number of CPUs per task, e.g. --cpus 16"
        )
    return int(m.group(1))


def check_partition(value: str) -> str:
    if not _PARTITION_RE.fullmatch(value):
        raise KilnError(
            f"--partition {value!r} is not a Slurm partition name (letters, digits, '.', '_', "
            "'-'; several separated by commas); see `sinfo -s` for the partitions"
        )
    return value


def check_account(value: str) -> str:
    if not _ACCOUNT_RE.fullmatch(value):
        raise KilnError(
            f"--account {value!r} is not a Slurm account name (letters, digits, '.', '_', '-', "
            "'@', '+'); see `sacctmgr show assoc user=$USER` for yours"
        )
    return value


def time_limit_minutes(value: str) -> float | None:
    """Minutes of a Slurm time limit, None for UNLIMITED; KilnError for anything else.

    >>> time_limit_minutes("04:00:00"), time_limit_minutes("1-12"), time_limit_minutes("90")
    (240.0, 2160.0, 90.0)
    """
    v = value.strip()
    if v.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME_RE.fullmatch(v)
    if not m:
        raise KilnError(
            f"--time {value!r} is not a Slurm time limit; use minutes, MM:SS, HH:MM:SS, D-HH, "
            "D-HH:MM or D-HH:MM:SS (e.g. --time 04:00:00)"
        )
    g = {k: int(x) if x is not None else 0 for k, x in m.groupdict().items()}
    if m.group("m") is not None:
        minutes = g["m"] + g["ms"] / 60
    elif m.group("h") is not None:
        minutes = g["h"] * 60 + g["hm"] + g["hs"] / 60
    else:
        minutes = g["d"] * 1440 + g["dh"] * 60 + g["dm"] + g["ds"] / 60
    if minutes <= 0:
        raise KilnError(f"--time {value!r} is zero; give a positive time limit")
    return minutes


def check_extra_option(option: str) -> str:
    """One ``--sbatch-option``: ``--qos=long`` or ``#SBATCH --qos=long`` -> ``#SBATCH --qos=long``."""
    text = option.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH"):].strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise KilnError(f"--sbatch-option {option!r}: control characters (a newline?) are not "
                        "allowed; give one option per --sbatch-option")
    if not text.startswith("-"):
        raise KilnError(f"--sbatch-option {option!r} is not an sbatch option; write it as on the "
                        "sbatch command line, e.g. --sbatch-option=--qos=long")
    name = text.split("=", 1)[0].split()[0]
    if name in _FORBIDDEN_EXTRA:
        raise KilnError(f"--sbatch-option {option!r}: {name} is set by qec-kiln (one array task "
                        "per batch); it cannot be changed")
    return "#SBATCH " + text


def plain_path(path: Path, what: str) -> str:
    text = str(path)
    if not _SAFE_PATH_RE.fullmatch(text):
        raise KilnError(
            f"{what} {text!r} has characters an #SBATCH line cannot hold (spaces, quotes, '%', "
            "...); set QEC_KILN_HOME to a plain path, or give "
            "--sbatch-option=--output=/plain/path/%A_%a.out"
        )
    return text


# --------------------------------------------------------------------------------------------
# Slurm's answers

def parse_parsable(output: str) -> str:
    """The job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``).

    >>> parse_parsable("4242\\n"), parse_parsable("77;big-cluster\\n")
    ('4242', '77')
    """
    for line in reversed(output.strip().splitlines()):
        m = re.fullmatch(r"\s*(\d+)(;\S+)?\s*", line)
        if m:
            return m.group(1)
    raise KilnError(f"sbatch printed no job id (got {output.strip()[:200]!r})")


def _split_task(job: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"(\d+)_(\d+)", job.strip())
    return (m.group(1), int(m.group(2))) if m else None


def parse_squeue(output: str) -> dict[tuple[str, int], tuple[str, str, int | None]]:
    """``{(array id, task): (STATE, reason, restarts)}`` from :meth:`SlurmBackend.squeue_argv`.

    >>> parse_squeue("12_0|RUNNING|None|0|\\n12_1|PENDING|BeginTime|1|\\n12_[2-4]|PENDING|x|0|\\n")
    {('12', 0): ('RUNNING', 'None', 0), ('12', 1): ('PENDING', 'BeginTime', 1)}
    """
    out: dict[tuple[str, int], tuple[str, str, int | None]] = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 4:
            continue
        key = _split_task(parts[0])
        if key is None:
            continue
        restarts = int(parts[3]) if parts[3].isdigit() else None
        out[key] = (parts[1].upper(), parts[2], restarts)
    return out


def parse_sacct(output: str) -> dict[tuple[str, int], tuple[str, str, int | None]]:
    """The same mapping from :meth:`SlurmBackend.sacct_argv` (``CANCELLED by 0`` -> CANCELLED).

    >>> parse_sacct("12_0|COMPLETED|0:0\\n12_1|CANCELLED by 0|0:15\\n12_2|FAILED|1:0\\n")[("12", 2)]
    ('FAILED', 'exit code 1:0', None)
    """
    out: dict[tuple[str, int], tuple[str, str, int | None]] = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2:
            continue
        key = _split_task(parts[0])
        if key is None or not parts[1]:
            continue
        code = parts[2] if len(parts) > 2 else ""
        detail = f"exit code {code}" if code and code != "0:0" else ""
        out[key] = (parts[1].split()[0].upper(), detail, None)
    return out


def id_key(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)

"""What the SkyPilot and Slurm backends share: running their client commands, reading the
packaged job templates, and the qec-kiln version stamped into what they render.

>>> packaged_text("sinter_job.sbatch").startswith("#!")
True
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from importlib import resources


def kiln_version() -> str:
    from qec_kiln import __version__

    return __version__


def packaged_text(name: str) -> str:
    """The text of a job template shipped inside the package (``qec_kiln/data/``, byte-identical
    copies of ``configs/``)."""
    return resources.files("qec_kiln").joinpath("data", name).read_text(encoding="utf-8")


def run_command(
    argv: Sequence[str], *, stream: bool = False, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell); with ``stream`` also copy its output to stderr line by line."""
    argv = list(argv)
    if not stream:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
        rc = proc.wait()
    return subprocess.CompletedProcess(argv, rc, "".join(lines), "")

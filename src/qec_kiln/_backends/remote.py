"""What the SkyPilot and Slurm backends share: calling their client commands, reading job
templates, short digests for names, and the "Rendered by" stamp with the qec-kiln version.

>>> source, text = read_template(None, "sinter_job.sbatch", "sbatch template")
>>> source, text.startswith("#!")
('packaged:sinter_job.sbatch', True)
>>> rendered_by("0.1.0", "my job.yaml", "; see that file for comments").rstrip()
'# Rendered by qec-kiln 0.1.0 from my job.yaml; see that file for comments.'
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import ClassVar

from qec_kiln._backends.base import Backend, quote_argv
from qec_kiln._errors import KilnError

# (argv, [stream,] timeout) -> CompletedProcess with text output. The single seam to the
# scheduler's commands; tests replace it.
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def kiln_version() -> str:
    from qec_kiln._version import __version__

    return __version__


def packaged_text(name: str) -> str:
    """The text of a job template shipped inside the package (``qec_kiln/data/``, byte-identical
    copies of ``configs/``)."""
    return resources.files("qec_kiln").joinpath("data").joinpath(name).read_text(encoding="utf-8")


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


def read_template(path: str | None, default_name: str, what: str) -> tuple[str, str]:
    """``(source, text)`` of the user's template at ``path``, else of the packaged one."""
    if not path:
        return f"packaged:{default_name}", packaged_text(default_name)
    try:
        return path, Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise KilnError(f"{path}: cannot read the {what} ({e.strerror})") from e


def rendered_by(version: str, source: str, note: str = "") -> str:
    """The comment line that heads a rendered job file; a file name cannot break out of it."""
    return f"# Rendered by qec-kiln {' '.join(version.split())} from {' '.join(source.split())}{note}.\n"


def short_digest(text: str) -> str:
    """8 hex digits of sha256: keeps two sweeps whose plain names collide apart.

    >>> short_digest("my sweep/1")
    '82e27a33'
    """
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class RemoteBackend(Backend):
    """A backend that drives a scheduler through its client commands (``sky``, ``sbatch``, ...).

    ``runner`` replaces the function that runs them (tests). ``job_states`` never raises when
    the scheduler cannot be asked: it returns what it knows and leaves the reason in
    ``self.warning`` (see :meth:`warnings`).
    """

    default_runner: ClassVar[Runner] = staticmethod(run_command)

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner: Runner = runner or type(self).default_runner
        self.warning: str = ""

    def warnings(self) -> list[str]:
        return [self.warning] if self.warning else []

    def missing_command(self, argv: Sequence[str], what: str) -> str:
        """The error line when ``argv[0]`` is not installed."""
        return f"cannot {what} {self.name} jobs: `{argv[0]}` was not found"

    def _call(self, argv: list[str], *, timeout: float | None, what: str,
              stream: bool | None = None) -> subprocess.CompletedProcess[str]:
        kwargs = {} if stream is None else {"stream": stream}
        try:
            return self.runner(argv, timeout=timeout, **kwargs)
        except FileNotFoundError as e:
            raise KilnError(self.missing_command(argv, what)) from e
        except subprocess.TimeoutExpired as e:
            raise KilnError(f"`{quote_argv(argv)}` did not answer in {timeout:g} s") from e

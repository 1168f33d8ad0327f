"""The real single-node Slurm cluster that the Slurm tests use (a pytest plugin module).

``slurm_cluster`` (session scope) runs ``.ci/slurm.sh up <state dir>`` once, yields a
:class:`SlurmCluster`, and runs ``.ci/slurm.sh down <state dir>`` at the end of the session,
whatever the tests did (and again from ``atexit`` if the session is interrupted before its
teardown).

* Not root, or no ``slurmctld`` on PATH: the tests that use it are **skipped** with the reason.
* ``QEC_KILN_REQUIRE_SLURM=1`` (CI sets it): those cases, and a cluster that does not start,
  **fail** instead; as root without the packages it first runs ``.ci/slurm.sh install``
  (apt-get, about a minute). Elsewhere install them with ``sudo .ci/slurm.sh install``.

Example::

    def test_hostname(slurm_cluster, tmp_path):
        job = slurm_cluster.sbatch(["-o", str(tmp_path / "out"), "--wrap", "hostname"])
        slurm_cluster.wait_gone([job], 30)
        assert (tmp_path / "out").read_text().strip() == slurm_cluster.node

Code under test that calls ``sbatch`` itself needs ``SLURM_CONF`` in its environment:
``monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))``, or ``env=slurm_cluster.env`` for a
subprocess.

The cluster advertises ``max(4, nproc)`` CPUs (``KILN_SLURM_CPUS``) so that a few sleeping test
jobs run side by side on a 2-core machine, and keeps finished jobs for 30 s (``MinJobAge``), long
enough to ``scontrol requeue`` them. Its logs are in ``<state dir>/log``; the state dir is kept
(and its path printed) when a test of the session failed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from kiln_helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
SLURM_SH = REPO / ".ci" / "slurm.sh"
REQUIRE_ENV = "QEC_KILN_REQUIRE_SLURM"
UP_TIMEOUT_S = 150.0
INSTALL_TIMEOUT_S = 600.0


def slurm_required() -> bool:
    """True when ``QEC_KILN_REQUIRE_SLURM`` is set to something other than ``""``/``0``."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclasses.dataclass
class SlurmCluster:
    """A running single-node cluster; every helper runs the Slurm client commands against it."""

    state_dir: Path
    conf: Path
    node: str

    @property
    def env(self) -> dict[str, str]:
        """The current ``os.environ`` plus ``SLURM_CONF``: pass it as a subprocess's ``env=``."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (an argv list) against this cluster."""
        proc = subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
            )
        return proc

    def sbatch(self, args: Sequence[str], *, cwd: str | os.PathLike | None = None) -> str:
        """``sbatch --parsable ARGS``; the job id (the array job id for an array)."""
        proc = subprocess.run(
            ["sbatch", "--parsable", *args], env=self.env, capture_output=True, text=True,
            timeout=30, stdin=subprocess.DEVNULL, cwd=cwd, check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"sbatch {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def states(self, job_id: str | None = None) -> dict[str, str]:
        """``{"12_0": "RUNNING", "12_1": "COMPLETED", "13": "PENDING"}``: every job slurmctld still
        knows (finished ones for ``MinJobAge`` seconds), one entry per array task."""
        argv = ["squeue", "--states=all", "--array", "--noheader", "-o", "%i %T"]
        if job_id is not None:
            argv += ["--jobs", job_id]
        proc = self.run(argv, check=False)
        out: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = parts[1]
        return out

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o ID`` as a dict (``JobState``, ``Restarts``, ``ExitCode``, ...)."""
        proc = self.run(["scontrol", "show", "job", "-o", job_id])
        info: dict[str, str] = {}
        for word in proc.stdout.split():
            key, sep, value = word.partition("=")
            if sep:
                info.setdefault(key, value)
        return info

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.25):
        """``wait_until`` (conftest.py), naming the cluster's jobs when it times out."""
        return wait_until(predicate, timeout, lambda: f"{what}; jobs: {self.states()}",
                          interval=interval)

    def wait_gone(self, job_ids: Sequence[str], timeout: float = 60.0) -> None:
        """Wait until ``squeue`` lists no pending, running or completing job (or array task) of
        ``job_ids``: a test waits for its own jobs only, never for the whole cluster to idle."""
        mine = {str(j).split("_")[0] for j in job_ids}

        def gone() -> bool:
            proc = self.run(["squeue", "--noheader", "--array", "-o", "%i"], check=False)
            return proc.returncode == 0 and not any(
                line.strip().split("_")[0] in mine for line in proc.stdout.splitlines())

        self.wait_for(gone, timeout, f"jobs {sorted(mine)} to leave the queue")

    def cancel_all(self) -> None:
        """``scancel`` every job the cluster knows of (a test's cleanup)."""
        ids = sorted({i.split("_")[0] for i, s in self.states().items()
                      if s not in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL",
                                   "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")})
        if ids:
            self.run(["scancel", *ids], check=False)


def _unavailable(reason: str) -> None:
    if slurm_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def _down(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SLURM_SH), "down", str(state_dir)], capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, check=False,
    )


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable("the Slurm test cluster needs root (its daemons run as root)")
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

    def installed() -> bool:
        return all(shutil.which(x, path=sbin) for x in ("slurmctld", "slurmd", "munged", "sbatch"))

    if not installed() and slurm_required() and SLURM_SH.exists():
        # CI: install the Debian packages (about a minute) rather than fail on a fresh machine.
        try:
            inst = subprocess.run(["bash", str(SLURM_SH), "install"], capture_output=True,
                                  text=True, timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL,
                                  check=False)
        except subprocess.TimeoutExpired:
            _unavailable(f"{SLURM_SH} install did not finish in {INSTALL_TIMEOUT_S:g}s")
        if inst.returncode != 0:
            _unavailable(f"{SLURM_SH} install failed:\n{inst.stderr.strip()[-3000:]}")
    if not installed():
        _unavailable("slurmctld/munged not installed; run: sudo .ci/slurm.sh install")
    if shutil.which("bash") is None or not SLURM_SH.exists():
        _unavailable(f"{SLURM_SH} or bash is missing")

    state_dir = Path(tempfile.mkdtemp(prefix="kiln-slurm-"))  # short path: unix sockets live there
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            _down(state_dir)

    atexit.register(stop)  # a KeyboardInterrupt before teardown still stops the daemons
    env_up = dict(os.environ)
    env_up.setdefault("KILN_SLURM_CPUS", str(max(4, os.cpu_count() or 1)))
    try:
        try:
            up = subprocess.run(
                ["bash", str(SLURM_SH), "up", str(state_dir)], capture_output=True, text=True,
                timeout=UP_TIMEOUT_S, env=env_up, stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired:
            _unavailable(f"{SLURM_SH} up did not finish in {UP_TIMEOUT_S:g}s; logs in {state_dir}")
        if up.returncode != 0:
            _unavailable(
                f"{SLURM_SH} up failed (exit {up.returncode}):\n{up.stderr.strip()[-3000:]}"
            )
        node = os.uname().nodename.split(".")[0]
        yield SlurmCluster(state_dir=state_dir, conf=state_dir / "slurm.conf", node=node)
    finally:
        stop()
        with contextlib.suppress(ValueError):
            atexit.unregister(stop)
        if getattr(request.session, "testsfailed", 0):
            print(f"\nSlurm test cluster state and logs kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)

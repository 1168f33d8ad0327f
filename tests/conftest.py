"""Shared fixtures. Server fixtures (moto S3, GCS emulator) and the real Slurm cluster live in
their own plugin modules next to this file."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

pytest_plugins = ["fixtures_servers", "fixtures_slurm", "fixtures_browser"]

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))


#: Parametrized cases that take seconds (the other cases of their test are fast). Whole slow tests
#: carry ``@pytest.mark.slow`` themselves; every ``slurm`` test is slow too.
SLOW_CASES = ("[s3-unreachable-endpoint]", "[s3-no-credentials]", "[s3-wrong-credentials]",
              "[merge-garbage-fragment]")


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

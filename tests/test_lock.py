"""The lock, ``constraints.txt``: ``make test``, ``make demo`` and ``.ci/sky-local.sh`` install
exactly its versions (what CI passed with), so a new upstream release cannot turn main red; users
who ``pip install qec-kiln`` get pyproject's compatible ranges instead. ``make lock`` rewrites it.

These tests fail when the lock and pyproject.toml disagree, when the test environment drifted from
the lock, and (slow) when the package no longer installs and runs without the lock.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kiln_helpers import write_surface_circuits
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"
# The extras `make test`, `make demo` and `make watch-demo` install (gpu needs CUDA: not locked).
LOCKED_EXTRAS = ("test", "view", "skypilot", "tsim")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")
# The Pythons the lock must serve: requires-python's floor up to the newest CI and users run.
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def lock_lines() -> list[Requirement]:
    """The lock's pins as requirements: ``NAME==VERSION``, with a marker where the pin holds only
    for some Pythons or platforms."""
    pins = []
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier or [None]
        assert spec is not None and spec.operator == "==" and not req.extras, (
            f"constraints.txt:{number}: {line!r} is not NAME==VERSION[ ; MARKER] (run `make lock`)")
        pins.append(req)
    return pins


def locked(environment: dict[str, str] | None = None) -> dict[str, Version]:
    """The pins that hold in ``environment`` (default: this interpreter's), by canonical name;
    two pins of one name that both hold are an error."""
    pins: dict[str, Version] = {}
    for req in lock_lines():
        if req.marker is not None and not req.marker.evaluate(environment):
            continue
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} is pinned twice for {environment or 'this Python'}"
        pins[name] = Version(next(iter(req.specifier)).version)
    return pins


def python(version: str) -> dict[str, str]:
    """The marker environment of CPython ``version`` on Linux x86_64."""
    return {"python_version": version, "python_full_version": f"{version}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "platform_machine": "x86_64"}


def project_requirements(environment: dict[str, str] | None = None) -> list[tuple[str, Requirement]]:
    """(where, requirement) for the dependencies and the locked extras of pyproject.toml that
    apply in ``environment`` (default: this interpreter's)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra in LOCKED_EXTRAS:
        reqs += [(f"[{extra}]", Requirement(r)) for r in project["optional-dependencies"][extra]]
    return [(where, r) for where, r in reqs
            if r.marker is None or r.marker.evaluate({**(environment or {}), "extra": ""})]


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_lock_pins_every_requirement_of_pyproject_inside_its_range(version):
    """For each Python that pyproject supports: every requirement pinned once, in its range."""
    env = python(version)
    pins = locked(env)
    assert canonicalize_name("qec-kiln") not in pins, "the lock must not pin the project itself"
    problems = []
    for where, req in project_requirements(env):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} ({where}) is not in the lock")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req} ({where}) but the lock pins {req.name}=={pin}")
    assert not problems, (f"constraints.txt and pyproject.toml disagree for Python {version}; "
                          "run `make lock`:\n" + "\n".join(problems))


def test_the_lock_was_resolved_for_every_python_pyproject_allows():
    """A lock resolved on one Python pins releases that older ones cannot install (numpy 2.4 has
    no Python 3.10 wheel): `make lock` resolves for requires-python's floor and up."""
    tomllib = pytest.importorskip("tomllib")
    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == f">={SUPPORTED[0]}", floor
    assert f"for Python >= {SUPPORTED[0]}" in LOCK.read_text().split("\n", 3)[1], (
        "constraints.txt was not resolved for every supported Python (run `make lock`)")


def test_the_lock_pins_what_the_local_skypilot_installs():
    sky_version = re.search(r"^SKY_VERSION=(\S+)$", (REPO / ".ci/sky-local.sh").read_text(),
                            re.MULTILINE)
    assert sky_version, ".ci/sky-local.sh names no SKY_VERSION"
    pins = locked()
    assert pins.get("skypilot") == Version(sky_version.group(1)), pins.get("skypilot")
    assert "uv" in pins


def test_every_install_of_the_makefile_and_the_ci_takes_the_lock():
    makefile = (REPO / "Makefile").read_text()
    pip = re.search(r"^PIP\s*:=\s*(.*)$", makefile, re.MULTILINE)
    assert pip and "pip install" in pip.group(1) and "--constraint $(LOCK)" in pip.group(1)
    assert re.search(r"^LOCK\s*:=\s*constraints\.txt$", makefile, re.MULTILINE)
    recipes = [ln for ln in makefile.splitlines() if ln.startswith("\t")]
    installs = [ln for ln in recipes if "$(PIP)" in ln]
    assert "\t$(PIP) -e ." in installs and "\t$(PIP) -e '.[test]'" in installs, installs
    # `make lock` alone resolves without the lock (in its scratch venv): no other plain pip
    assert [ln for ln in recipes if "pip install" in ln and "LOCK_VENV" not in ln] == []
    assert '--constraint "$HERE/../constraints.txt"' in (REPO / ".ci/sky-local.sh").read_text()


def test_this_environment_holds_the_locked_versions():
    """The venv the tests run in (``make test``'s) was installed from the lock, so what passed
    here is what the lock says. A drifted venv: ``make clean test``."""
    drifted = []
    for name, pin in locked().items():
        try:
            have = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # in the lock for another venv (the local SkyPilot's) or another extra
        if have != pin:
            drifted.append(f"{name} {have} (lock: {pin})")
    missing = []
    for where, req in project_requirements():
        try:
            importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            if where in ("dependencies", "[test]"):
                missing.append(f"{req} ({where})")
    assert not drifted and not missing, (
        "this environment is not the lock's (run `make clean test`):\n"
        + "\n".join(drifted + [f"missing {m}" for m in missing]))


@pytest.mark.slow  # a fresh venv and a resolve against the package index: about a minute
def test_the_package_installs_and_runs_without_the_lock(tmp_path):
    """What a user gets from ``pip install qec-kiln``: pyproject's ranges resolved to today's
    releases, no constraints file. It installs, plans a sweep, runs it locally and merges it.
    Prints where today's releases differ from the lock (what the next ``make lock`` brings)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_CONSTRAINT", "PYTHONPATH", "VIRTUAL_ENV")}
    # --no-compile: no .pyc for every module of every package installed (most of the install's
    # CPU on 2 cores); the sweep below compiles what it imports.
    pip = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
                          "--no-compile", str(REPO)],
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    assert pip.returncode == 0, pip.stderr[-3000:]
    circuits = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001,))
    kiln = str(venv / "bin/qec-kiln")
    env["QEC_KILN_HOME"] = str(tmp_path / "home")
    for argv in (["launch", str(circuits), "--max-shots", "2000", "--max-errors", "100",
                  "--bucket", str(tmp_path / "bucket"), "--name", "unlocked"],
                 ["merge", "--bucket", str(tmp_path / "bucket"), "--out",
                  str(tmp_path / "merged.csv")]):
        proc = subprocess.run([kiln, *argv], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"qec-kiln {argv[0]}:\n{proc.stdout}\n{proc.stderr}"
    rows = (tmp_path / "merged.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[0].strip() == "2000", rows
    freeze = subprocess.run([str(venv / "bin/python"), "-m", "pip", "freeze"], env=env,
                            capture_output=True, text=True, timeout=120, check=True).stdout
    pins = locked()
    newer = []
    for line in freeze.splitlines():
        match = PIN.match(line.strip())
        if match and canonicalize_name(match.group(1)) in pins:
            pin = pins[canonicalize_name(match.group(1))]
            if Version(match.group(2)) != pin:
                newer.append(f"{match.group(1)} {match.group(2)} (lock {pin})")
    print("\nwithout the lock: " + (", ".join(newer) if newer else "the lock's versions"))

"""Shared fixtures and hooks. Server fixtures (moto S3, GCS emulator), the real Slurm cluster
and the real SkyPilot on it live in their own plugin modules next to this file; ``bucket_env``
here gives a test a fresh bucket on each kind of store. The plain helpers (``run_kiln``,
``wait_until``, ``make_sweep``, ...) are in kiln_helpers.py."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest
from kiln_helpers import HOSTILE, run_kiln, write_surface_circuits

pytest_plugins = ["fixtures_servers", "fixtures_slurm", "fixtures_browser", "fixtures_sky"]

# The tests start `python -m qec_kiln` hundreds of times: let those children keep compiled
# bytecode (a machine with PYTHONDONTWRITEBYTECODE=1 recompiled every module each time, about
# 0.25 s per process), outside the tree.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(
    tempfile.gettempdir(), f"qec-kiln-test-pycache-{os.getuid()}"))

#: Parametrized cases that take seconds (the other cases of their test are fast). Whole slow tests
#: carry ``@pytest.mark.slow`` themselves (test_bad_inputs.py's cases say ``slow=True``); every
#: ``slurm`` test is slow too.
SLOW_CASES = (
    # ~5 s: each of its bucket handles' first request to moto takes ~0.3 s ([gcs]: ~0.5 s in all)
    "test_merge_and_status_of_a_cloud_sweep_equal_sinter_combine_cold_and_warm[s3]",
)


#: ``make test`` and ``make fast`` run the tests on pytest-xdist workers (``-n N``); each worker
#: is a pytest session of its own, with its own session fixtures (servers, clusters). The modules
#: below keep all their tests on one worker, the modules of one group together: one real Slurm
#: cluster for the Slurm tests, one chromium for the page tests, one node cache (sky_executor.py)
#: for the node tests. Any other test goes to whichever worker is free. A new module whose tests
#: share a costly session or module fixture, or one instance of something, gets a line here.
XDIST_GROUPS = {
    "test_collect_fleet.py": "slurm",
    "test_shipped_decoders.py": "slurm",
    "test_slurm_backend.py": "slurm",
    "test_slurm_cluster.py": "slurm",
    "test_view_browser.py": "browser",
    "test_sky_executor.py": "sky_executor",
}


def xdist_scope(nodeid: str) -> str:
    """The unit of work a test belongs to: its module's group, else the test alone."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    group = XDIST_GROUPS.get(module)
    return f"group:{group}" if group else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (xdist's ``--dist load``): load balancing by test, except that each group of
    ``XDIST_GROUPS`` is one unit. (xdist 3.8's own ``--dist loadgroup`` and ``xdist_group`` marks
    do nothing under pytest 9: it renames ``item._nodeid``, which pytest 9 no longer reads.) The
    largest units are handed out first."""
    if config.getoption("dist") not in ("load", "loadgroup"):
        return None  # an explicit --dist loadscope / loadfile / worksteal: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """``make fast`` (``-m "not slow"``) skips the real cluster and the slow cases above. A
    ``slurm`` test in a module outside the "slurm" group would start a second cluster on
    another worker: refused at collection, naming the line to add."""
    for item in items:
        if item.get_closest_marker("slurm"):
            module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
            if XDIST_GROUPS.get(module) != "slurm":
                raise pytest.UsageError(f"{item.nodeid} is marked slurm: add "
                                        f'"{module}": "slurm" to XDIST_GROUPS in tests/conftest.py')
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


@pytest.fixture
def small_circuits(tmp_path) -> pathlib.Path:
    """Four small rotated-surface-code circuits (d=3,5 x p=0.001,0.01)."""
    return write_surface_circuits(tmp_path / "circuits")


@pytest.fixture
def kiln():
    """``kiln("launch", ...)`` runs the CLI as a subprocess; see run_kiln."""
    return run_kiln


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


@pytest.fixture
def bucket_url(bucket_env) -> str:
    """``bucket_env.url``: the URL of a fresh bucket on each kind of store."""
    return bucket_env.url


@pytest.fixture
def hostile_circuits(tmp_path):
    """Three circuits, one of them named like markup (a valid name for sinter and discovery)."""
    folder = write_surface_circuits(tmp_path / "circuits", distances=(3,), noises=(0.001, 0.01))
    src = next(folder.glob("d=3,p=0.01*.stim"))
    (folder / f"{HOSTILE}.stim").write_text(src.read_text())
    return folder

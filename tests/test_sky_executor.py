"""SkyPilot managed jobs executed on this machine (tests/sky_executor.py) against moto S3 and the
GCS emulator: the task's own setup (a fresh virtualenv of the system Python, the launcher's
wheel, pinned requirements) and run (run-batch of the batch its rank names)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import types
import zipfile
from pathlib import Path

import pytest
import yaml
from kiln_helpers import (
    ON_CLOUDS,
    assert_sweep_merges_exactly,
    fragment_rows,
    make_sweep,
    notebook,
    shots_per_task,
    wait_for_uploaded_rows,
    write_surface_circuits,
)
from sky_executor import Node, NodeCache, run_ranks

from qec_kiln._backends.skypilot import ship as _ship
from qec_kiln._backends.skypilot.backend import packaged_yaml_text
from qec_kiln._command import _main as cli
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.fragments import complete_lines

# Slow, and each test may take more than the default 300 s when its node installs a venv on a
# loaded machine (xdist workers beside the SkyPilot module).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="session")
def kiln_wheel(tmp_path_factory) -> _ship.KilnWheel:
    """One wheel of this checkout for the whole session (built like `launch` builds it)."""
    return _ship.build_wheel(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="session")
def node_cache() -> NodeCache:
    return NodeCache()


def node_task(wheel: _ship.KilnWheel, bucket_url: str, sweep: str, batches: list[str],
              secrets: dict[str, str], sync_seconds: float = 1.0) -> dict:
    """The packaged task YAML filled in as the launcher fills it (envs, secrets, wheel mount)."""
    cfg = yaml.safe_load(packaged_yaml_text("sinter_job.yaml"))
    cfg["file_mounts"] = {wheel.remote_path: str(wheel.path)}
    cfg["envs"].update({
        "KILN_BUCKET": bucket_url, "KILN_SWEEP": sweep, "KILN_BATCHES": ",".join(batches),
        "KILN_VERSION": "0.1.0", "KILN_SYNC_SECONDS": f"{sync_seconds:g}", "KILN_PROCESSES": "1",
        "KILN_WHEEL": wheel.remote_path,
        "KILN_NODE_REQUIREMENTS": " ".join(_ship.node_requirements(bucket_url, ["pymatching"])),
    })
    cfg["secrets"] = dict(secrets)
    return cfg


def _venv_site(home: Path) -> Path:
    (site,) = (home / "kiln-venv").resolve().glob("lib/python3*/site-packages")
    return site


def test_fresh_node_installs_the_launchers_code_and_no_skypilot(tmp_path, kiln_wheel, s3_env,
                                                                node_cache):
    """Setup in a fresh venv end to end; the venv holds the launcher's files byte for byte."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(3,), noises=(0.001,))
    make_sweep(circuits, s3_env.url, "fresh", max_shots=2_000, max_errors=100, jobs=1)
    task = node_task(kiln_wheel, s3_env.url, "fresh", ["b000"], s3_env.env)
    node = Node(task, 0, 1, tmp_path / "node", cache=node_cache)
    result = node.run()
    assert result.setup_rc == 0, result.log
    assert not result.setup_reused and result.setup_seconds > 0
    print(f"fresh node setup: {result.setup_seconds:.1f} s")
    assert result.returncode == 0, result.log
    assert "batch finished" in result.log

    site = _venv_site(node.home)
    assert not (site / "sky").exists() and not list(site.glob("skypilot*"))
    root = _ship.source_root()
    assert root is not None
    for name, path in _ship.tree_files(root):
        if name.startswith("src/qec_kiln/") and name.endswith(".py"):
            installed = site / name[len("src/"):]
            assert hashlib.sha256(installed.read_bytes()).digest() == \
                hashlib.sha256(path.read_bytes()).digest(), name
    python = node.home / "kiln-venv" / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, sys; "
                            "print(u.find_spec('sky'), sys.prefix)"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert probe.stdout.startswith("None"), probe.stdout + probe.stderr
    assert "/work/main/.venv" not in probe.stdout


def test_shipped_decoder_objects_run_on_a_fresh_node(tmp_path, kiln_wheel, s3_env, node_cache):
    """A notebook's decoder and sampler objects (custom_decoders, pickled by value) reach a node
    whose venv holds only the node requirements (cloudpickle among them) and run in the
    unmodified sinter there: exact counts on a noiseless circuit."""
    import stim

    import qec_kiln
    from qec_kiln._prepare import Fleet, prepare_sweep
    from qec_kiln._sweep.shipped import python_version

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "d=3,r=2.stim").write_text(str(stim.Circuit.generated(
        "repetition_code:memory", distance=3, rounds=2)))
    cell = notebook()
    settings = dict(custom_decoders={"flip": cell.AlwaysFlip(1),
                                     "counter": cell.CountingSampler("seen")},
                    decoders=["flip", "counter"], max_shots=2000, max_errors=10**6,
                    name="shipped", jobs=1)
    prepare_sweep(str(folder), Fleet.build(settings), open_bucket(s3_env.url), lambda _l: None,
                  commit=True)
    task = node_task(kiln_wheel, s3_env.url, "shipped", ["b000"], s3_env.env)
    task["envs"]["KILN_PYTHON"] = python_version()
    result = Node(task, 0, 1, tmp_path / "node", cache=node_cache).run()
    assert result.setup_rc == 0, result.log
    assert result.returncode == 0, result.log
    stats = {s.decoder: s for s in qec_kiln.merge(s3_env.url, None, sweep="shipped").stats}
    assert (stats["flip"].shots, stats["flip"].errors) == (2000, 2000)
    assert (stats["counter"].shots, stats["counter"].custom_counts["seen"]) == (2000, 2000)


def launch_through_qec_kiln(monkeypatch, tmp_path, circuits, env, name, *extra) -> dict:
    """``qec-kiln launch --backend skypilot`` in-process, intercepting only SkyPilot's final SDK
    calls; returns what ``sky.jobs.launch`` received (the exact task) and the CLI's answer."""
    import sky

    seen: dict = {}

    def launch(task, name=None, num_jobs=None, **kw):
        seen.update(task=task, name=name, num_jobs=num_jobs)
        return "request-id"

    monkeypatch.setattr(sky.jobs, "launch", launch)
    monkeypatch.setattr(sky, "stream_and_get",
                        lambda rid, **kw: (list(range(101, 101 + seen["num_jobs"])), None))
    text = packaged_yaml_text("sinter_job.yaml").replace("# secrets:\n", "secrets:\n" + "".join(
        f"  {k}: null\n" for k in env.env))
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(text)
    rc = cli.main(["launch", str(circuits), "--backend", "skypilot", "--bucket", env.url,
                   "--name", name, "--yaml", str(job_yaml), "--processes", "1",
                   "--sync-seconds", "1", *extra])
    assert rc == 0
    return seen


@ON_CLOUDS
def test_sweep_of_n_jobs_merges_exactly(tmp_path, node_cache, monkeypatch, bucket_env):
    env = bucket_env
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.001, 0.01))
    seen = launch_through_qec_kiln(monkeypatch, tmp_path, circuits, env, "nj", "--jobs", "3",
                                   "--max-shots", "3_000", "--max-errors", "10_000")
    task = seen["task"]
    batches = task.envs["KILN_BATCHES"].split(",")
    assert seen["num_jobs"] == len(batches) == 3
    runs = run_ranks(task, len(batches), tmp_path / "nodes", cache=node_cache)
    for r in runs:
        assert r.status == "SUCCEEDED", r.log
        assert f"{batches[r.rank]}: batch finished" in r.log  # rank k ran batch k
    assert_sweep_merges_exactly(env.url, "nj", batches, tasks=4, shots_each=3_000,
                                out=tmp_path / "merged.csv")


def test_recovery_after_sigkill_resumes_exactly(tmp_path, kiln_wheel, node_cache, s3_env):
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.001, 0.003))
    max_shots = 1_000_000  # ~10 s on 2 cores: still running when the first rows are uploaded
    make_sweep(circuits, s3_env.url, "rec", max_shots=max_shots, max_errors=1_000_000, jobs=1)
    bucket = open_bucket(s3_env.url)
    task = node_task(kiln_wheel, s3_env.url, "rec", ["b000"], s3_env.env, sync_seconds=0.5)
    first = Node(task, 0, 1, tmp_path / "vm1", cache=node_cache)
    assert first.setup() == 0, first.result.log
    first.start()
    snapshot = wait_for_uploaded_rows(bucket, "rec/fragments/b000.csv", 2, timeout=120)
    assert len(fragment_rows(snapshot)) >= 2, "no upload before the kill"
    assert len(first.pids()) >= 3  # bash -> run-batch, sinter and its worker
    first.kill()
    assert first.pids() == []
    at_kill = bucket.read_bytes("rec/fragments/b000.csv")

    # SkyPilot's recovery: a new VM, setup and run again from scratch.
    second = Node(task, 0, 1, tmp_path / "vm2", cache=node_cache)
    result = second.run()
    assert result.status == "SUCCEEDED", result.log
    assert "restored" in result.log
    final = bucket.read_bytes("rec/fragments/b000.csv")
    assert final.startswith(at_kill)
    assert sorted(shots_per_task(final).values()) == [max_shots, max_shots]


def _rows_bytes(rows_data: bytes) -> tuple[int, float, int]:
    """(shots, sinter seconds, rows) of a fragment's complete rows."""
    rows = fragment_rows(rows_data)
    return sum(r.shots for r in rows), sum(r.seconds for r in rows), len(rows)


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "sigkill"])
def test_cancel_during_a_job_loses_what_skypilot_allows(tmp_path, kiln_wheel, node_cache, s3_env,
                                                        graceful):
    """A cancel mid-run. Graceful (SIGTERM, then teardown): run-batch uploads what sinter wrote up
    to the signal, within one row. Not graceful (teardown = SIGKILL): the bucket keeps the last
    periodic upload, so at most about one sync period of sinter's work is lost."""
    sync = 2.0
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.001,))
    make_sweep(circuits, s3_env.url, "cx", max_shots=50_000_000, max_errors=50_000_000, jobs=1)
    bucket = open_bucket(s3_env.url)
    task = node_task(kiln_wheel, s3_env.url, "cx", ["b000"], s3_env.env, sync_seconds=sync)
    node = Node(task, 0, 1, tmp_path / "vm", cache=node_cache)
    assert node.setup() == 0, node.result.log
    node.start()
    uploaded = wait_for_uploaded_rows(bucket, "cx/fragments/b000.csv", 3, timeout=120)
    assert len(fragment_rows(uploaded)) >= 3, "no periodic uploads before the cancel"
    time.sleep(sync * 0.7)  # somewhere between two periodic uploads
    exited = node.cancel(graceful=graceful)
    assert node.pids() == []
    local = (node.sandbox / "tmp" / "qec-kiln-work" / "cx" / "b000" / "resume.csv").read_bytes()
    final = bucket.read_bytes("cx/fragments/b000.csv")
    assert complete_lines(local).startswith(final)  # one history; nothing counted twice
    wrote, wrote_s, wrote_rows = _rows_bytes(complete_lines(local))
    kept, kept_s, kept_rows = _rows_bytes(final)
    lost_shots, lost_s, lost_rows = wrote - kept, wrote_s - kept_s, wrote_rows - kept_rows
    print(f"cancel graceful={graceful}: run exited in {exited:.2f} s; sinter wrote {wrote_rows} "
          f"rows ({wrote} shots, {wrote_s:.2f} s); the bucket lost {lost_rows} rows "
          f"({lost_shots} shots, {lost_s:.2f} sinter-seconds); sync period {sync:g} s")
    if graceful:
        assert node.result.returncode == 128 + 15, node.result.log
        assert "received SIGTERM" in node.result.log and "final upload done" in node.result.log
        assert exited < 15
        assert lost_rows <= 1, node.result.log
    else:
        # One sync period plus its uploads' round trips, plus the row sinter was writing (up to
        # --max_batch_seconds, longer when load rises after sinter sized it): margin for a
        # loaded 2-core machine, still far below the run's length (a lost upload would be all).
        assert lost_s <= 3 * sync + 2, (lost_s, wrote_s)


def test_cancel_asks_through_the_bucket_then_a_sigkill_loses_nothing(tmp_path, kiln_wheel,
                                                                     node_cache, s3_env):
    """``qec-kiln cancel``'s stop request (``_node/stop.py``) before SkyPilot's cancel, which on
    its Slurm infra SIGKILLs the task: run-batch stops, uploads every complete line, says so and
    holds; the SIGKILL after that loses nothing."""
    from qec_kiln._node.stop import request_stop, stop_key

    sync = 2.0
    circuits = write_surface_circuits(tmp_path / "c", distances=(5,), noises=(0.001,))
    make_sweep(circuits, s3_env.url, "cs", max_shots=50_000_000, max_errors=50_000_000, jobs=1)
    bucket = open_bucket(s3_env.url)
    task = node_task(kiln_wheel, s3_env.url, "cs", ["b000"], s3_env.env, sync_seconds=sync)
    node = Node(task, 0, 1, tmp_path / "vm", cache=node_cache, job_id=41)
    assert node.setup() == 0, node.result.log
    node.start()
    wait_for_uploaded_rows(bucket, "cs/fragments/b000.csv", 3, timeout=120)
    time.sleep(sync * 0.7)
    started = time.monotonic()
    assert request_stop(bucket, "cs", ["41"], timeout=sync + 30) == ["41"]
    stopped = time.monotonic() - started
    assert node.proc is not None and node.proc.poll() is None  # holding until the teardown
    node.kill()  # what SkyPilot's cancel does to the task on its Slurm infra
    local = (node.sandbox / "tmp" / "qec-kiln-work" / "cs" / "b000" / "resume.csv").read_bytes()
    final = bucket.read_bytes("cs/fragments/b000.csv")
    assert complete_lines(local) == final  # every complete line sinter wrote
    assert bucket.read_bytes(stop_key("cs", "41") + ".stopped") == f"{len(final)}\n".encode()
    log = bucket.read_bytes("cs/logs/b000.log").decode()
    assert "a cancel asked this run to stop" in log and "stopped as a cancel asked" in log, log
    print(f"stop request: run-batch stopped and uploaded {len(fragment_rows(final))} rows "
          f"{stopped:.2f} s after the request (sync period {sync:g} s); 0 rows lost")


def _sky_would_restart(task: dict, exit_code: int) -> bool:
    """SkyPilot's own decision (sky/jobs/recovery_strategy.py) for a job that exited so."""
    from sky.jobs.recovery_strategy import StrategyExecutor

    rec = task["resources"]["job_recovery"]
    codes = rec.get("recover_on_exit_codes")
    state = types.SimpleNamespace(
        recover_on_exit_codes=[codes] if isinstance(codes, int) else list(codes or []),
        max_restarts_on_errors=rec.get("max_restarts_on_errors", 0),
        restart_cnt_on_failure=0,
    )
    return StrategyExecutor.should_restart_on_failure(state, exit_codes=[exit_code])


def test_configuration_error_on_the_node_is_not_retried(tmp_path, kiln_wheel, node_cache, s3_env):
    task = node_task(kiln_wheel, s3_env.url, "no-such-sweep", ["b000"], s3_env.env)
    result = Node(task, 0, 1, tmp_path / "node", cache=node_cache).run()
    assert result.setup_rc == 0, result.log
    assert result.returncode == 2, result.log
    errors = [ln for ln in result.log.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "no-such-sweep" in errors[0], result.log
    assert not _sky_would_restart(task, result.returncode)
    assert not _sky_would_restart(task, 3)  # another writer
    assert _sky_would_restart(task, 75)  # the final upload failed: a new VM may reach the bucket


def test_setup_without_a_qec_kiln_fails_fast(tmp_path, kiln_wheel, s3_env):
    task = node_task(kiln_wheel, s3_env.url, "x", ["b000"], s3_env.env)
    task["envs"]["KILN_WHEEL"] = ""
    result = Node(task, 0, 1, tmp_path / "node", cache=None).run()
    assert result.status == "FAILED_SETUP" and result.setup_rc == 2
    assert "error: neither KILN_WHEEL nor KILN_PIP_SPEC is set" in result.log


def test_installed_distribution_is_repacked_byte_for_byte(tmp_path, kiln_wheel):
    """A launcher running an installed (non-editable) qec-kiln ships exactly those files."""
    target = tmp_path / "site"
    subprocess.run([shutil.which("pip") or "pip", "install", "--quiet", "--no-deps", "--target",
                    str(target), str(kiln_wheel.path)], check=True)
    repacked = _ship.build_wheel(tmp_path / "cache", pkg=target / "qec_kiln")
    assert repacked.origin.startswith("installed distribution")
    with zipfile.ZipFile(repacked.path) as zf:
        names = [n for n in zf.namelist() if n.startswith("qec_kiln/")]
        assert names
        for n in names:
            assert zf.read(n) == (target / n).read_bytes(), n
    again = _ship.build_wheel(tmp_path / "cache", pkg=target / "qec_kiln")
    assert again.path == repacked.path and again.sha256 == repacked.sha256

"""SkyPilot pools (``--backend skypilot --workers K``), checked through SkyPilot's own code: its
schema, task loader and pool check, its click commands, its pool scheduler's rule for a job
without resources; and a pool worker run by tests/sky_executor.py (setup once, batches in turn)
against moto S3. Only SkyPilot's calls that would reach an API server are replaced."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from kiln_helpers import (
    FakeController,
    assert_sweep_merges_exactly,
    run_sky_cli,
    write_launches,
    write_surface_circuits,
)
from sky_executor import PoolWorker

from qec_kiln._backends import LaunchRequest
from qec_kiln._backends.skypilot import backend as sp
from qec_kiln._backends.skypilot import pool as pools
from qec_kiln._command import _main as cli
from qec_kiln._errors import KilnError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    monkeypatch.setenv("QEC_KILN_HOME", str(tmp_path / "kiln-home"))
    monkeypatch.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")


def request(sweep="surface-d3", batches=("b000", "b001", "b002", "b003"), **opts):
    opts.setdefault("workers", 2)
    return LaunchRequest("s3://bkt/sweeps", sweep, tuple(batches), sp.SkyPilotOptions(**opts),
                         num_batches_total=len(batches), kiln_version="0.1.0",
                         node_hour_price=0.16)


def fake_pool_sdk(monkeypatch, existing=()):
    """SkyPilot's SDK calls that reach a server, replaced; returns the calls they received."""
    import sky

    calls: list = []
    pools_up = {r["name"]: r for r in existing}

    def pool_status(names):
        calls.append(("pool_status", names))
        return ("status", [r for n, r in pools_up.items() if names is None or n in names])

    def pool_apply(task, name, mode, workers=None):
        calls.append(("pool_apply", task, name, mode, workers))
        return ("apply", None)

    def launch(task, name=None, pool=None, num_jobs=None, **kw):
        calls.append(("launch", task, name, pool, num_jobs))
        return ("launch", list(range(201, 201 + num_jobs)))

    def pool_down(names):
        calls.append(("pool_down", names))
        return ("down", None)

    monkeypatch.setattr(sky.jobs, "pool_status", pool_status)
    monkeypatch.setattr(sky.jobs, "pool_apply", pool_apply)
    monkeypatch.setattr(sky.jobs, "pool_down", pool_down)
    monkeypatch.setattr(sky.jobs, "launch", launch)
    monkeypatch.setattr(sky, "get", lambda rid: rid[1])
    monkeypatch.setattr(sky, "stream_and_get", lambda rid, **kw: (rid[1], None)
                        if rid[0] == "launch" else rid[1])
    return calls


def test_packaged_pool_yaml_has_no_job_recovery():
    text = (REPO / "configs" / "sinter_pool.yaml").read_bytes()
    cfg = yaml.safe_load(text)
    assert cfg["pool"] == {"workers": 1} and "job_recovery" not in cfg["resources"]
    assert "run" not in cfg  # the jobs bring run


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_pool_task_passes_skypilots_checks_and_job_recovery_is_refused_by_them():
    from sky.serve import serve_utils

    r = sp.SkyPilotBackend().render(request(cpus="8+"))
    pool = r.pool
    assert pool is not None and pool.workers == 2 and pool.name.startswith("kiln-pool-")
    task = pools.validate_pool(pool.pool_config, "t")  # schema, loader, validate_service_task
    assert task.service.pool and "pip install" in task.setup
    assert {str(x.cpus) for x in task.resources} == {"8+"}
    (remote, local), = task.file_mounts.items()
    assert task.envs["KILN_WHEEL"] == remote and Path(local).is_file()
    # SkyPilot's own pool check refuses job_recovery (sky/serve/serve_utils.py)
    bad = copy.deepcopy(pool.pool_config)
    bad["resources"]["job_recovery"] = {"strategy": "EAGER_NEXT_REGION"}
    with pytest.raises(KilnError, match="job_recovery is disabled for Pool"):
        pools.validate_pool(bad, "t")
    # the job task: envs and run only; its resources are empty, so SkyPilot's pool scheduler
    # gives each job a whole worker (serve_utils.get_next_cluster_name)
    assert set(r.task_config) == {"name", "envs", "run"}
    job = sp.SkyPilotBackend().sky_task(r)
    assert all(serve_utils._is_empty_resource(x) for x in job.resources)
    assert not job.setup and not job.file_mounts
    assert not set(pools.INSTALL_ENVS) & set(job.envs)
    assert job.envs["KILN_BATCHES"] == "b000,b001,b002,b003"


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_pool_name_is_reused_across_sweeps_and_changes_with_the_install():
    b = sp.SkyPilotBackend()
    a = b.render(request()).pool.name
    assert b.render(request(sweep="other", batches=("b000", "b001", "b002"))).pool.name == a
    assert b.render(request(workers=3)).pool.name == a  # the worker count is not in the name
    assert b.render(request(cpus="32+")).pool.name != a
    assert b.render(request(kiln_pip_spec="qec-kiln==0.1.0")).pool.name != a
    assert b.render(request(pool="my-pool")).pool.name == "my-pool"
    assert b.render(request(workers=9)).pool.workers == 4  # no more workers than batches
    with pytest.raises(KilnError, match="--pool 'bad name': .* is invalid"):
        b.render(request(pool="bad name"))
    with pytest.raises(KilnError, match="give --workers K too"):
        b.render(request(workers=None, pool="p"))
    with pytest.raises(KilnError, match="GPU pools"):
        b.render(request(gpus="H100:1"))


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_skypilots_click_commands_accept_our_pool_argv(tmp_path):
    r = sp.SkyPilotBackend().render(request())
    (tmp_path / "pool.yaml").write_text(pools.pool_yaml(r.pool))
    (tmp_path / "job.yaml").write_text(r.yaml_text)
    seen = {}

    def pool_apply(task, pool, workers=None, mode=None, _need_confirmation=True):
        seen["apply"] = (task, pool, workers)
        return "rid"

    def launch(dag, name=None, pool=None, num_jobs=None, **kw):
        seen["launch"] = (dag, name, pool, num_jobs)
        return "rid"

    apply_argv = [*r.pool_argv[1:-1], str(tmp_path / "pool.yaml")]
    res = run_sky_cli(apply_argv, managed_jobs={"pool_apply": pool_apply},
                       command={"_async_call_or_wait": lambda *a, **k: None})
    assert "apply" in seen, res.output
    task, name, workers = seen["apply"]
    assert name == r.pool.name and workers is None and task.service.pool
    launch_argv = [*r.launch_argv[1:-1], str(tmp_path / "job.yaml")]
    res = run_sky_cli(launch_argv, managed_jobs={"launch": launch},
                       sdk={"stream_and_get": lambda *a, **k: ([201, 202, 203, 204], None)})
    assert "launch" in seen, res.output
    dag, name, pool, num_jobs = seen["launch"]
    assert (name, pool, num_jobs) == (r.job_name, r.pool.name, 4)
    assert "will be ignored" not in res.output  # no setup or file mounts in a pool job


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_launch_creates_the_pool_once_then_reuses_it(monkeypatch):
    backend = sp.SkyPilotBackend()
    calls = fake_pool_sdk(monkeypatch)
    sub = backend.launch(request())
    kinds = [c[0] for c in calls]
    assert kinds == ["pool_status", "pool_apply", "launch"]
    _, task, name, _, workers = calls[1]
    assert task.service.pool and workers is None
    _, job, job_name, pool, num_jobs = calls[2]
    assert (job_name, pool, num_jobs) == (sp.job_name("surface-d3"), name, 4)
    assert sub.job_ids == {"b000": "201", "b001": "202", "b002": "203", "b003": "204"}
    assert "created pool" in sub.message and "about $0.32/hour" in sub.message
    record = json.loads((sp.state_dir("surface-d3") / "launches.json").read_text())[-1]
    assert record["pool"] == name and record["workers"] == 2 and not record["keep_pool"]
    # a second sweep with the same install finds the pool warm: no pool_apply
    calls2 = fake_pool_sdk(monkeypatch, existing=[{"name": name, "target_num_replicas": 2}])
    sub = backend.launch(request(sweep="second"))
    assert [c[0] for c in calls2] == ["pool_status", "launch"] and "reused warm pool" in sub.message
    # a bigger K grows it
    calls3 = fake_pool_sdk(monkeypatch, existing=[{"name": name, "target_num_replicas": 1}])
    backend.launch(request(sweep="third"))
    assert [c[0] for c in calls3] == ["pool_status", "pool_apply", "launch"]
    assert calls3[1][1] is None and calls3[1][4] == 2


def test_status_says_the_idle_pool_bills_when_every_job_ended(monkeypatch):
    name = sp.job_name("surface-d3")
    write_launches("surface-d3", [
        {"bucket": "s3://bkt/sweeps", "batches": ["b000", "b001"], "job_ids": [11, 12],
         "launched_at": 1.7e9, "pool": "kiln-pool-abc", "workers": 2, "keep_pool": False}])

    def backend_for(statuses, other=()):
        FakeController(monkeypatch, [{"job_id": 11 + i, "job_name": name, "status": s,
                                      "pool": "kiln-pool-abc"} for i, s in enumerate(statuses)]
                       + list(other))
        return sp.SkyPilotBackend()

    b = backend_for(["SUCCEEDED", "RUNNING"])
    b.job_states("s3://bkt/sweeps", "surface-d3")
    assert b.warnings() == []
    b = backend_for(["SUCCEEDED", "SUCCEEDED"])
    b.job_states("s3://bkt/sweeps", "surface-d3")
    assert b.warnings() == ["pool kiln-pool-abc idle: 2 workers billing; "
                            "`qec-kiln pool down kiln-pool-abc`"]
    # another sweep still runs on the pool: not idle
    b = backend_for(["SUCCEEDED", "SUCCEEDED"], [{"job_id": 30, "job_name": "kiln-x",
                                                  "status": "RUNNING", "pool": "kiln-pool-abc"}])
    b.job_states("s3://bkt/sweeps", "surface-d3")
    assert b.warnings() == []


def test_pool_subcommands_go_through_the_sdk(monkeypatch, capsys):
    calls = fake_pool_sdk(monkeypatch, existing=[
        {"name": "kiln-pool-abc", "status": "READY", "target_num_replicas": 2,
         "replica_info": [{"status": "READY", "used_by": [7]}, {"status": "READY"}]},
        {"name": "someone-elses", "status": "READY", "target_num_replicas": 1}])
    assert cli.main(["pool", "status"]) == 0
    out = capsys.readouterr().out
    assert "kiln-pool-abc  READY  workers 2/2 ready  jobs 7" in out and "someone" not in out
    assert cli.main(["pool", "down", "kiln-pool-abc"]) == 0
    assert calls[-1] == ("pool_down", ["kiln-pool-abc"])
    assert cli.main(["pool", "down", "--pool", "nope"]) == 2  # KilnError
    assert "no pool nope found" in capsys.readouterr().err


@pytest.mark.slow
def test_pool_worker_sets_up_once_then_runs_batches_in_turn(tmp_path, s3_env, monkeypatch):
    """The reuse is the point: one worker, one setup, three batches one after another; a batch
    whose job ended without finishing is launched again, and the merge is exact."""
    calls = fake_pool_sdk(monkeypatch)
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.001, 0.01))
    text = sp.packaged_yaml_text("sinter_job.yaml").replace("# secrets:\n", "secrets:\n" + "".join(
        f"  {k}: null\n" for k in s3_env.env))
    (tmp_path / "job.yaml").write_text(text)
    argv = ["launch", str(circuits), "--backend", "skypilot", "--bucket", s3_env.url,
            "--name", "pl", "--yaml", str(tmp_path / "job.yaml"), "--processes", "1",
            "--sync-seconds", "1", "--workers", "1", "--jobs", "3", "--max-shots", "3000",
            "--max-errors", "10000"]
    assert cli.main(argv) == 0
    (_, pool_task, name, _, _), (_, job_task, _, pool_name, num_jobs) = calls[1], calls[2]
    assert pool_task.service.pool and num_jobs == 3 and pool_name == name
    batches = job_task.envs["KILN_BATCHES"].split(",")

    worker = PoolWorker(pool_task, tmp_path / "w0")
    assert worker.setup() == 0, worker.node.result.log
    for rank in range(2):  # the third job's worker is preempted before it starts
        run = worker.run_job(job_task, rank, num_jobs)
        assert run.status == "SUCCEEDED", run.log
        assert f"{batches[rank]}: batch finished" in run.log

    # SkyPilot's queue: two jobs done, the third ended without finishing (skypilot#7168: a
    # preempted pool job may not return to pending). `launch` again relaunches only that batch.
    again = fake_pool_sdk(monkeypatch, existing=[{"name": name, "target_num_replicas": 1}])
    FakeController(monkeypatch, [{"job_id": 201 + i, "job_name": sp.job_name("pl"), "status": st,
                                  "pool": name} for i, st in enumerate(["SUCCEEDED", "SUCCEEDED",
                                                                        "CANCELLED"])])
    assert cli.main(argv) == 0
    assert [c[0] for c in again] == ["pool_status", "launch"]  # the warm pool is reused
    (_, job2, _, _, n2) = again[1]
    assert n2 == 1 and job2.envs["KILN_BATCHES"] == batches[2]
    run = worker.run_job(job2, 0, 1)
    assert run.status == "SUCCEEDED" and f"{batches[2]}: batch finished" in run.log, run.log
    assert worker.setups == 1 and len(worker.jobs) == 3  # one setup, three batches in turn

    assert_sweep_merges_exactly(s3_env.url, "pl", batches, tasks=4, shots_each=3_000,
                                out=tmp_path / "merged.csv")

"""Workers and batches: K workers take B batches from the engine's queue, with disjoint CPU sets
(and GPUs) per worker on a machine; the planner's default B; the dry run's K, B and efficiency."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import sinter
from kiln_helpers import write_surface_circuits

import qec_kiln
from qec_kiln._backends import LaunchRequest, get_backend
from qec_kiln._backends.local import backend as lo
from qec_kiln._backends.local.state import StateFolder
from qec_kiln._backends.slurm import backend as sl
from qec_kiln._errors import KilnError
from qec_kiln._node.sinter_cmd import sinter_collect_argv
from qec_kiln._node.workers import allowed_cpus, gpu_ids, parse_cpus, worker_environments

CPUS = sorted(os.sched_getaffinity(0))


# ---------------------------------------------------------------- the assignment (pure)


@pytest.mark.parametrize("n_cpus,workers", [(2, 1), (2, 2), (16, 3), (64, 8), (7, 7)])
def test_worker_cpu_sets_are_disjoint_and_cover_the_machine(n_cpus, workers):
    ws = worker_environments(range(n_cpus), [], workers)
    sets = [set(w.cpus) for w in ws]
    assert len(ws) == workers and all(sets)
    assert sum(len(s) for s in sets) == n_cpus and set().union(*sets) == set(range(n_cpus))
    assert max(map(len, sets)) - min(map(len, sets)) <= 1
    assert all(w.env == {} for w in ws)  # no GPU: no CUDA_VISIBLE_DEVICES at all


def test_an_eight_gpu_node_runs_eight_workers_each_with_its_gpu_and_cpus():
    ws = worker_environments(range(32), [str(g) for g in range(8)])
    assert [w.env for w in ws] == [{"CUDA_VISIBLE_DEVICES": str(g)} for g in range(8)]
    assert [w.cpus for w in ws] == [tuple(range(4 * g, 4 * g + 4)) for g in range(8)]
    # Fewer workers than GPUs: contiguous groups; a GPU is never in two workers.
    two = worker_environments(range(32), [str(g) for g in range(8)], 2)
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in two] == ["0,1,2,3", "4,5,6,7"]
    with pytest.raises(KilnError, match="more than the 8 GPU"):
        worker_environments(range(32), [str(g) for g in range(8)], 9)


def test_gpus_come_from_the_flag_and_cuda_visible_devices():
    assert gpu_ids("H100:8", {}) == [str(g) for g in range(8)]
    assert gpu_ids("H100:2", {"CUDA_VISIBLE_DEVICES": "3,5,7"}) == ["3", "5"]
    with pytest.raises(KilnError, match="only 1 GPU"):
        gpu_ids("A100:2", {"CUDA_VISIBLE_DEVICES": "0"})


def test_cpus_outside_this_process_are_refused():
    assert allowed_cpus(None) == CPUS
    assert allowed_cpus(str(CPUS[-1])) == [CPUS[-1]]
    with pytest.raises(KilnError, match="not allowed to this process"):
        allowed_cpus(f"{max(CPUS) + 1}")
    with pytest.raises(KilnError, match="--cpus-allowed 'x'"):
        parse_cpus("x")


def test_sinter_gets_the_workers_cpus():
    argv = sinter_collect_argv([pathlib.Path("/w/a.stim")], decoders=["pymatching"], max_shots=1,
                               max_errors=1, processes=2, resume_path=pathlib.Path("/w/r.csv"),
                               cpu_ids=[2, 3])
    i = argv.index("--allowed_cpu_affinity_ids")
    assert argv[i + 1:i + 3] == ["2", "3"]


# ---------------------------------------------------------------- backends


def test_local_slots_get_disjoint_cpus_in_the_commands(tmp_path):
    b = get_backend("local")
    req = LaunchRequest(str(tmp_path / "b"), "sw", ("b000", "b001", "b002"),
                        b.options({"workers": len(CPUS)}))
    workers = b._workers(req)
    assert len(workers) == min(3, len(CPUS))
    allowed = [set(parse_cpus(b._argv(req, ["b000"], w)[b._argv(req, ["b000"], w).index(
        "--cpus-allowed") + 1])) for w in workers]
    assert all(len(a) >= 1 for a in allowed)
    assert sum(map(len, allowed)) == len(set().union(*allowed))  # disjoint
    # Default: one worker with every core (one sinter with all of them).
    cap = b.capacity(b.options()).at(10)
    assert cap.slots == 1 and cap.processes == len(CPUS)
    assert b.options({"parallel": 2}).workers == 2  # the old name


def test_slurm_array_is_throttled_to_k_workers(kiln_isolated):
    b = get_backend("slurm")
    req = LaunchRequest("s3://bkt", "sw", tuple(f"b{i:03d}" for i in range(8)),
                        b.options({"workers": 2}), kiln_version="0.1.0")
    assert "#SBATCH --array=0-7%2\n" in b.render(req).script
    assert "at most 2 at once" in b.describe(req)
    no_k = LaunchRequest("s3://bkt", "sw", ("b000", "b001"), b.options(), kiln_version="0.1.0")
    assert "#SBATCH --array=0-1\n" in b.render(no_k).script


def test_skypilot_workers_are_a_pool_with_a_warm_start_up():
    sky = get_backend("skypilot")
    pool = sky.capacity(sky.options({"workers": 4})).at(8)
    assert pool.slots == 4 and pool.startup_seconds < 60
    assert pool.first_startup_seconds == sky.startup_seconds  # a new VM for a worker's first batch
    assert sky.capacity(sky.options()).at(8).startup_seconds == sky.startup_seconds


def test_default_batch_count_comes_from_start_up_and_workers():
    from qec_kiln._planning.makespan import choose_batch_count

    slurm = get_backend("slurm")

    def count(cpus: str, task_seconds: list[float]) -> int:
        cap = slurm.capacity(slurm.options({"workers": 8, "cpus": cpus})).at(1)
        return choose_batch_count(sum(task_seconds) / cap.processes, n_tasks=len(task_seconds),
                                  workers=cap.workers, startup_seconds=cap.startup_seconds,
                                  first_startup_seconds=cap.first_startup_seconds).batches

    # 640 tasks x 1 h on 8 workers of 16 processes, 30 s start-up: >= 4 batches per worker.
    b = count("16", [3600.0] * 640)
    assert b >= 32 and b % 8 == 0
    # A tenth of that: each batch keeps >= 20 x 30 s of work, so 24 batches (3 rounds of 8).
    assert count("16", [3600.0] * 64) == 24
    # Little work: each batch keeps >= 20 x its start-up, so fewer batches than 4 K.
    small = count("1", [600.0] * 8)
    assert 8 <= small <= 10


# ---------------------------------------------------------------- plans, dry runs, real runs


@pytest.mark.slow
def test_plan_json_reports_workers_batches_and_efficiency(tmp_path, kiln):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.001, 0.01))
    r = kiln("plan", str(circuits), "--bucket", str(tmp_path / "b"), "--jobs", "4",
             "--workers", "2", "--processes", "1", "--json", check=True)
    d = json.loads(r.stdout)
    assert (d["workers"], d["num_batches"]) == (2, 4)
    assert 0 < d["predicted_efficiency"] <= 1
    one = d["one_job_per_batch"]
    assert one["num_batches"] == 2 and 0 < one["predicted_efficiency"] <= 1
    text = kiln("launch", str(circuits), "--bucket", str(tmp_path / "b"), "--jobs", "4",
                "--workers", "2", "--processes", "1", "--dry-run", check=True).stdout
    assert "workers K=2, batches B=4" in text and "one batch per worker (B=K=2)" in text


@pytest.mark.slow
def test_local_batches_start_longest_first_on_their_workers_cpus(tmp_path):
    """A real local sweep, K = 1: batches run one after another, longest predicted first, each
    sinter pinned to the worker's CPUs; the merge holds every shot."""
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.001, 0.01))
    bucket = tmp_path / "b"
    sub = qec_kiln.launch(circuits, max_shots=3000, max_errors=10**6, bucket=bucket, name="q",
                          jobs=4, backend_options={"workers": 1, "processes": 1})
    assert not sub.failed, sub.message
    p = qec_kiln.plan(circuits, max_shots=3000, max_errors=10**6, bucket=bucket, name="q")
    by_cost = [b.id for b in sorted(p.batches, key=lambda b: -b.predicted_seconds)]
    state = StateFolder.of(str(bucket), "q").root
    started = sorted(p.batches, key=lambda b: json.loads(
        (state / f"{b.id}.pid").read_text())["started"])
    assert [b.id for b in started] == by_cost
    log = state / f"{by_cost[0]}.out"  # run-batch's log (its work folder is gone once done)
    assert f"CPUs {lo.format_cpus(CPUS)}" in log.read_text()
    merged = tmp_path / "m.csv"
    qec_kiln.merge(bucket, merged, sweep="q")
    stats = sinter.read_stats_from_csv_files(str(merged))
    assert len(stats) == 4 and all(s.shots == 3000 for s in stats)


def test_slurm_array_task_k_runs_the_kth_longest_batch(tmp_path):
    circuits = write_surface_circuits(tmp_path / "c", distances=(3, 5), noises=(0.001, 0.01))
    p = qec_kiln.plan(circuits, max_shots=10**5, bucket=tmp_path / "b", jobs=4, backend="slurm",
                      backend_options={"workers": 2, "processes": 1})
    from qec_kiln._planning.makespan import queue_order

    order = queue_order(p.batches)
    costs = {b.id: b.predicted_seconds for b in p.batches}
    assert [costs[b] for b in order] == sorted(costs.values(), reverse=True)
    req = LaunchRequest("s3://bkt", p.sweep, tuple(order),
                        get_backend("slurm").options({"workers": 2}), kiln_version="0.1.0")
    assert f"KILN_BATCHES={','.join(order)}" in sl.SlurmBackend().render(req).script

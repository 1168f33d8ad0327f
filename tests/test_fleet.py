"""Properties of the queue model (qec_kiln._planning.makespan) and a short run of bench/fleet.py."""

from __future__ import annotations

import math
import pathlib
import random
import subprocess
import sys

import pytest

from qec_kiln._errors import KilnError
from qec_kiln._planning.makespan import choose_batch_count, efficiency, list_schedule, queue_makespan

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_list_schedule_hands_each_batch_to_the_first_free_worker():
    # w0: 1+4 then 1+1 (ends 7); w1: 1+3 then 1+2 (ends 7)
    assert list_schedule([4, 3, 2, 1], 2, 1) == 7.0
    # one worker runs everything in turn, paying the start-up each time
    assert list_schedule([4, 3, 2, 1], 1, 1) == 14.0
    # a warm pool: one cold start per worker, then a small start-up per batch
    assert list_schedule([4, 3, 2, 1], 2, 1, first_startup_seconds=100) == 106.0
    # more workers than batches: the idle ones do not count
    assert list_schedule([5], 8, 2) == 7.0


def test_list_schedule_is_between_the_bounds_of_list_scheduling():
    rng = random.Random(1)
    for _ in range(300):
        k = rng.randint(1, 9)
        times = [rng.expovariate(1.0) for _ in range(rng.randint(1, 40))]
        s = rng.choice([0.0, 0.1, 1.0])
        t = list_schedule(times, k, s)
        paid = [x + s for x in times]
        assert t >= max(max(paid), sum(paid) / k) - 1e-9
        assert t <= sum(paid) / k + max(paid) + 1e-9  # Graham's bound


def test_queue_makespan_draws_one_factor_per_task():
    rng = random.Random(5)
    for _ in range(50):
        k = rng.randint(1, 6)
        batches = [[(f"t{rng.randint(0, 9)}", rng.uniform(0.1, 5))] for _ in range(rng.randint(1, 20))]
        exact = list_schedule([b[0][1] for b in batches], k, 0.5)
        assert queue_makespan(batches, k, 0.5, model_error=0) == exact
        noisy = queue_makespan(batches, k, 0.5, model_error=0.3, seed=3)
        assert noisy == queue_makespan(batches, k, 0.5, model_error=0.3, seed=3) > 0
    # one task in two batches on one worker: a shared factor, so the sum scales as one
    one = queue_makespan([[("a", 1.0)], [("a", 1.0)]], 1, model_error=0.5, draws=1, seed=2)
    half = queue_makespan([[("a", 1.0)]], 1, model_error=0.5, draws=1, seed=2)
    assert math.isclose(one, 2 * half)
    with pytest.raises(KilnError, match="^model_error must be"):
        queue_makespan([[("a", 1.0)]], 1, model_error=-1)


def test_efficiency_never_exceeds_one():
    rng = random.Random(2)
    for _ in range(300):
        k = rng.randint(1, 64)
        times = [rng.lognormvariate(0, 1.5) for _ in range(rng.randint(1, 200))]
        t = list_schedule(times, k, rng.choice([0.0, 0.5, 5.0]), first_startup_seconds=rng.random() * 50)
        assert 0 < efficiency(sum(times), k, t) <= 1 + 1e-12
        c = choose_batch_count(sum(times) * 100, rng.randint(1, 100), k, rng.random() * 400,
                               first_startup_seconds=rng.random() * 400, model_error=rng.random())
        for e in (c.efficiency, c.one_job_per_batch_efficiency, c.limit):
            assert 0 < e <= 1
        assert c.efficiency <= c.limit + 1e-12
        assert c.one_job_per_batch_efficiency <= c.limit + 1e-12


def test_more_batches_help_a_skewed_workload_under_a_queue():
    # The planner balances predictions; the model is wrong by a skewed factor per task. One batch
    # per worker (B = K) ends on the slowest batch; cutting the same work into 4K batches lets the
    # queue give the slow ones' neighbours less.
    rng = random.Random(3)
    k = 8
    for _ in range(50):
        slow = [rng.lognormvariate(0, 0.6) for _ in range(k)]  # each worker-sized share's true factor
        coarse = [100 * f for f in slow]                         # B = K: one share per batch
        fine = sorted((25 * f for f in slow for _ in range(4)), reverse=True)  # B = 4K, longest first
        assert math.isclose(sum(coarse), sum(fine))
        assert list_schedule(fine, k, 1) < list_schedule(coarse, k, 1)
    # and the chooser predicts so when the model's error is large and start-up cheap
    c = choose_batch_count(8 * 3600, 30, k, 5, first_startup_seconds=330, model_error=0.5)
    assert c.batches >= 4 * k and c.batches % k == 0
    assert c.efficiency > c.one_job_per_batch_efficiency


def test_batch_count_follows_the_startup_and_the_caps():
    # each batch keeps >= 20 x start-up of work: 6600 s with a 330 s start-up per batch -> B = K
    assert choose_batch_count(6600, 30, 7, 330).batches == 7
    # cheap start-up, exact model: 4 K batches (more would only add start-ups)
    assert choose_batch_count(6600, 30, 7, 5, first_startup_seconds=330, model_error=0).batches == 28
    # an uncertain model: more rounds shorten the tail, up to 6600 / (20 x 5) = 66 -> 9 rounds of 7
    assert choose_batch_count(6600, 30, 7, 5, first_startup_seconds=330, model_error=0.2).batches == 63
    # work allows only 3 K batches of >= 20 x 10 s: whole rounds of K
    assert choose_batch_count(8 * 3 * 200 + 50, 30, 8, 10).batches == 24
    rng = random.Random(4)
    for _ in range(500):
        n, shards, k = rng.randint(1, 50), rng.randint(1, 8), rng.randint(1, 300)
        work, startup, per_worker = rng.uniform(1, 1e6), rng.uniform(0, 400), rng.randint(1, 6)
        c = choose_batch_count(work, n, k, startup, max_shards_per_task=shards,
                               batches_per_worker=per_worker, model_error=rng.random())
        assert 1 <= c.batches <= n * shards
        if c.batches > per_worker * k:  # beyond the floor of batches, each keeps >= 20 x start-up
            assert work / c.batches >= 20 * startup
        assert c.one_job_per_batch_batches == min(k, n * shards)
        assert c.batches >= c.one_job_per_batch_batches


@pytest.mark.parametrize("kwargs", [
    dict(total_work_seconds=0),
    dict(total_work_seconds=-5),
    dict(total_work_seconds=math.nan),
    dict(total_work_seconds=math.inf),
    dict(n_tasks=0),
    dict(workers=0),
    dict(workers=2.5),
    dict(workers=True),
    dict(startup_seconds=-1),
    dict(first_startup_seconds=math.nan),
    dict(model_error=-0.1),
    dict(max_shards_per_task=0),
    dict(batches_per_worker=0),
])
def test_degenerate_inputs_are_refused(kwargs):
    args = dict(total_work_seconds=3600, n_tasks=10, workers=4, startup_seconds=5)
    args.update(kwargs)
    with pytest.raises(KilnError, match="must be") as info:
        choose_batch_count(**args)
    assert not str(info.value).startswith("error:")  # the CLI adds it: never "error: error: ..."


def test_list_schedule_refuses_bad_inputs():
    for bad in (dict(workers=0), dict(startup_seconds=-1), dict(batch=[1, -2]), dict(batch=[math.nan])):
        with pytest.raises(KilnError, match="must be") as info:
            list_schedule(bad.get("batch", [1, 2]), bad.get("workers", 2), bad.get("startup_seconds", 0))
        assert not str(info.value).startswith("error:")


@pytest.mark.slow
def test_fleet_bench_beats_one_job_per_batch_near_its_limit():
    # Issue 15's goal is ratio >= 0.90; with its pessimistic assumptions (uncalibrated model, 5%/h
    # preemptions) the 20-run means are 0.967, 0.956, 0.951, so a 3-run check asks for 0.90.
    out = subprocess.run([sys.executable, str(REPO / "bench" / "fleet.py"), "--repeats", "3"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [x for x in out.splitlines() if x.startswith("fleet: ")]
    assert len(lines) == 3, out
    for line in lines:
        fields = dict(f.split("=") for f in line.split()[2:])
        e1, e2, limit, ratio = (float(fields[k]) for k in ("one-job-per-batch", "pool+queue", "limit",
                                                           "ratio"))
        assert 0 < e1 < e2 <= limit <= 1, line
        assert ratio >= 0.90, line
    assert "assumption" in out.lower() and "model" in out.lower()

#!/usr/bin/env python3
"""Measured balance of qec-kiln's cost-based plan vs the original count-based split.

Plans the original 30-circuit sweep (rotated surface-code memory, d in 3..13, p in 0.001..0.01)
into 5 batches both ways:

- naive: the original design's ``--circuits-per-job 6`` in file-name order;
- kiln: qec-kiln's plan (``--jobs 5 --calibrate``), balanced by predicted cost, with shot shards
  (``--no-calibrate``: from the fitted cost model alone, without the pilot run);
- queue: B = 4 x 5 = 20 batches for K = 5 workers (``--jobs 20 --workers 5``: rounds of 5 of
  decreasing size), whose makespan is the engine's queue: list scheduling
  (``_planning.makespan.list_schedule``) of the measured batch times in the order the backends start
  them (longest predicted first), plus ``--startup-seconds`` more per batch (ideal: the same work
  and start-ups spread evenly over the 5 workers). A measured batch time already holds its
  start-up on this machine (run-batch, sinter and its worker process), which is the local
  backend's, so the default adds nothing more; a remote worker's start-up can be given;

then runs every batch of both plans for real, one after another, each as one ``qec-kiln run-batch
--processes 1`` (so the timings are comparable on a noisy machine), and prints for each plan the
measured makespan ÷ ideal (ideal = sum of batch times ÷ 5), and the cost model's prediction error
per circuit. A batch's time is the CPU time of its processes (run-batch, sinter and its worker),
which other load on a shared machine barely changes; the wall-clock ratios are printed too. Each
ratio's ideal is its own plan's measured CPU ÷ 5 (the queue's 20 batches cost more start-ups than
kiln's 5: the line before the last divides every makespan by one common ideal, kiln's). The
last line is ``balance: kiln=<r1> naive=<r2> queue=<r3>`` (CPU time).

Usage::

    python bench/balance.py                  # reduced targets: ends in < 10 min on 2 cores
    python bench/balance.py --no-calibrate   # the fitted model alone
    python bench/balance.py --max-shots 1_000_000 --max-errors 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "bench"))

import sinter  # noqa: E402
from cores import cpu_now  # noqa: E402
from generate_surface_codes import main as generate  # noqa: E402

import qec_kiln  # noqa: E402
from qec_kiln._planning._cost import shots_needed  # noqa: E402
from qec_kiln._planning.makespan import list_schedule, queue_order  # noqa: E402
from qec_kiln._storage import open_bucket  # noqa: E402
from qec_kiln._sweep.batches import Batch, Plan, Shard  # noqa: E402
from qec_kiln._sweep.store import upload_sweep  # noqa: E402


def naive_plan(prepared, per_job: int) -> Plan:
    """The original design: ``per_job`` circuits per batch in file-name order, unsharded."""
    m = prepared.manifest
    tasks = sorted(m.tasks, key=lambda t: t["circuit"])
    batches = []
    for i in range(0, len(tasks), per_job):
        shards = []
        for t in tasks[i:i + per_job]:
            shards.append(Shard(circuit=t["circuit"], decoder=t["decoder"], strong_id=t["strong_id"],
                                max_shots=m.max_shots, max_errors=m.max_errors,
                                predicted_seconds=0.0, predicted_shots=0.0))
        batches.append(Batch(id=f"b{len(batches):03d}", shards=shards))
    return Plan(batches=batches, max_shots=m.max_shots, max_errors=m.max_errors,
                strategy=f"naive circuits-per-job={per_job}")


def run_plan(label: str, prepared, bucket_dir: pathlib.Path):
    """Run every batch in the engine's order; return (CPU seconds per batch, wall seconds per
    batch, fragments folder)."""
    bucket = open_bucket(str(bucket_dir))
    upload_sweep(bucket, prepared.manifest, prepared.circuits, lambda s: None)
    cpu, wall = [], []
    by_id = {b.id: b for b in prepared.manifest.batches}
    for b in (by_id[i] for i in queue_order(prepared.manifest.batches)):
        c0, t0 = cpu_now(), time.perf_counter()
        subprocess.run([sys.executable, "-m", "qec_kiln", "run-batch", "--bucket", str(bucket_dir),
                        "--sweep", prepared.manifest.sweep, "--batch", b.id, "--processes", "1",
                        "--sync-seconds", "30"], check=True, stderr=subprocess.DEVNULL)
        wall.append(time.perf_counter() - t0)
        cpu.append(cpu_now() - c0)
        print(f"  {label} {b.id}: {len(b.shards):2d} shards, predicted "
              f"{b.predicted_seconds:7.1f} s, measured {cpu[-1]:7.1f} s CPU, {wall[-1]:7.1f} s wall",
              flush=True)
    return cpu, wall, bucket_dir / prepared.manifest.sweep / "fragments"


def ratio(times: list[float]) -> float:
    return max(times) / (sum(times) / len(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-shots", type=lambda s: int(float(s.replace("_", ""))), default=400_000)
    parser.add_argument("--max-errors", type=lambda s: int(float(s.replace("_", ""))), default=400)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--batches-per-worker", type=int, default=4,
                        help="the queue plan's B / K (default 4)")
    parser.add_argument("--startup-seconds", type=float, default=0.0,
                        help="start-up per batch in the queue plan on top of the measured one "
                             "(default 0: each measured batch time holds its process start-up)")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="plan from the fitted cost model only (no pilot run)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kiln-balance-") as tmp:
        tmp = pathlib.Path(tmp)
        # A fresh calibration cache: the pilot measures this machine now, not an earlier run.
        os.environ.setdefault("QEC_KILN_CACHE_DIR", str(tmp / "cache"))
        generate(["--out", str(tmp / "circuits")])
        t0 = time.perf_counter()
        kiln = qec_kiln.plan(tmp / "circuits", max_shots=args.max_shots,
                             max_errors=args.max_errors, name="kiln", jobs=args.jobs,
                             calibrate=args.calibrate, calibrate_seconds=60,
                             bucket=tmp / "kiln-bucket", log=print)
        print(f"planned in {time.perf_counter() - t0:.1f} s: predicted balance "
              f"{kiln.manifest.plan.balance_ratio:.3f}")
        naive = dataclasses.replace(kiln, manifest=dataclasses.replace(
            kiln.manifest, sweep="naive", plan=naive_plan(kiln, -(-30 // args.jobs))))

        queue = qec_kiln.plan(tmp / "circuits", max_shots=args.max_shots,
                              max_errors=args.max_errors, name="queue",
                              jobs=args.batches_per_worker * args.jobs, calibrate=args.calibrate,
                              calibrate_seconds=60, bucket=tmp / "queue-bucket",
                              backend_options={"workers": args.jobs, "processes": 1})

        naive_times, naive_wall, _ = run_plan("naive", naive, tmp / "naive-bucket")
        kiln_times, kiln_wall, kiln_frags = run_plan("kiln", kiln, tmp / "kiln-bucket")
        queue_times, queue_wall, _ = run_plan("queue", queue, tmp / "queue-bucket")
        s_up = args.startup_seconds

        def queue_ratio(times: list[float], startup: float = s_up) -> float:
            ideal = (sum(times) + len(times) * startup) / args.jobs
            return list_schedule(times, args.jobs, startup) / ideal

        # Prediction error per circuit: sinter's measured seconds vs the model's prediction.
        measured = {s.strong_id: s for s in sinter.read_stats_from_csv_files(
            *map(str, sorted(kiln_frags.glob("*.csv"))))}
        print(f"\n{'circuit':55s} {'pred s':>8s} {'meas s':>8s} {'error':>7s}")
        errors = []
        for t in sorted(kiln.manifest.tasks, key=lambda t: t["circuit"]):
            st = measured.get(t["strong_id"])
            if st is None:
                continue
            pred = t["seconds_per_shot"] * shots_needed(args.max_shots, args.max_errors,
                                                        t["p_logical"])
            err = pred / st.seconds - 1 if st.seconds > 0 else float("nan")
            errors.append(abs(err))
            print(f"{t['circuit']:55s} {pred:8.2f} {st.seconds:8.2f} {err:+7.0%}")
        errors.sort()
        print(f"prediction error |pred/meas - 1|: median {errors[len(errors) // 2]:.0%}, "
              f"max {errors[-1]:.0%}")
        print(f"naive: batch CPU s {[round(t, 1) for t in naive_times]}, sum {sum(naive_times):.1f} s")
        print(f"kiln:  batch CPU s {[round(t, 1) for t in kiln_times]}, sum {sum(kiln_times):.1f} s")
        print(f"queue: batch CPU s {[round(t, 1) for t in queue_times]}, sum {sum(queue_times):.1f}"
              f" s; on {args.jobs} workers: makespan "
              f"{list_schedule(queue_times, args.jobs, s_up):.1f} s (kiln's 5 batches, one per "
              f"worker: {max(kiln_times) + s_up:.1f} s)")
        common = sum(kiln_times) / args.jobs
        print(f"makespan / kiln's ideal ({common:.1f} s CPU per worker): "
              f"kiln={max(kiln_times) / common:.3f} naive={max(naive_times) / common:.3f} "
              f"queue={list_schedule(queue_times, args.jobs, s_up) / common:.3f}; queue with "
              f"+2 s per batch (the local planning constant) on its own ideal: "
              f"{queue_ratio(queue_times, s_up + 2):.3f}")
        print(f"wall-clock balance: kiln={ratio(kiln_wall):.3f} naive={ratio(naive_wall):.3f} "
              f"queue={queue_ratio(queue_wall):.3f}")
        print(f"balance: kiln={ratio(kiln_times):.3f} naive={ratio(naive_times):.3f} "
              f"queue={queue_ratio(queue_times):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""``qec_kiln.collect`` against ``sinter.collect`` on the same tasks, side by side.

Each run is a fresh Python process that builds the tasks, then times only the call (both
import their packages before the clock starts; qec-kiln loads the rest of its modules on the
first call, inside the timing): ``sinter.collect(num_workers=N, tasks=...,
...)`` and the same line with ``qec_kiln.collect`` and a fresh local bucket. The two alternate,
``--repeats`` times each, and each keeps its fastest run (a shared machine is noisy). Two
sizes: near-empty work (``--empty-shots``, default 1,000 shots of 4 small circuits) and about
``--seconds`` of work (surface codes at d=5 and d=7, shots scaled from a short sinter run).
Also the CPU time (user + system) of each run's whole process tree, imports included, which a
loaded machine barely changes. Prints the load, then::

    empty: sinter <s>  kiln <s>  kiln-sinter <s>   (goal <= 0.5 s); CPU ... kiln-sinter <s>
    work (<n> shots per task): sinter <s>  kiln <s>  kiln/sinter <ratio> (goal <= 1.03); CPU ...

Usage::

    python bench/collect_vs_sinter.py --repeats 3 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent

#: One timed call, run in a fresh process: argv[1] is "sinter" or "kiln", argv[2] the JSON of
#: the tasks' (kind, d, p) and the targets.
CHILD = r'''
import json, sys, tempfile, time
import sinter, stim
import qec_kiln
which, spec = sys.argv[1], json.loads(sys.argv[2])
tasks = [sinter.Task(circuit=stim.Circuit.generated(kind, distance=d, rounds=d,
                                                    after_clifford_depolarization=p,
                                                    before_measure_flip_probability=p),
                     json_metadata={"d": d, "p": p, "kind": kind})
         for kind, d, p in spec["tasks"]]
kw = dict(num_workers=spec["workers"], tasks=tasks, decoders=["pymatching"],
          max_shots=spec["shots"], max_errors=10**9)
if __name__ == "__main__":
    qec_kiln.collect  # its module, as `import sinter` loads sinter.collect's (the rest loads lazily)
    t0 = time.perf_counter()
    if which == "sinter":
        stats = sinter.collect(**kw)
    else:
        stats = qec_kiln.collect(**kw, bucket=tempfile.mkdtemp(prefix="kiln-bench-"))
    took = time.perf_counter() - t0
    print(json.dumps({"seconds": took, "shots": sum(s.shots for s in stats)}))
'''

EMPTY = [["repetition_code:memory", 3, 0.01], ["repetition_code:memory", 5, 0.01],
         ["surface_code:rotated_memory_x", 3, 0.001], ["surface_code:rotated_memory_x", 3, 0.003]]
WORK = [["surface_code:rotated_memory_x", 5, 0.005], ["surface_code:rotated_memory_x", 7, 0.005]]


def one(which: str, spec: dict, env: dict[str, str]) -> dict:
    """One timed call: its wall seconds, and the CPU seconds (user + system) of the whole
    process tree (imports included: what a loaded machine barely changes)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, which, json.dumps(spec)], env=env,
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{which} failed:\n{err.read()[-3000:]}")
        r = json.loads(out.read().strip().splitlines()[-1])
    r["cpu"] = usage.ru_utime + usage.ru_stime
    return r


def best_of(spec: dict, repeats: int, env: dict[str, str]) -> dict[str, float]:
    best = {k: float("inf") for k in ("sinter", "kiln", "sinter-cpu", "kiln-cpu")}
    for _ in range(repeats):
        for which in ("sinter", "kiln"):  # alternating: both see the same load drift
            r = one(which, spec, env)
            if r["shots"] != spec["shots"] * len(spec["tasks"]):
                raise SystemExit(f"{which}: {r['shots']} shots, expected "
                                 f"{spec['shots'] * len(spec['tasks'])}")
            best[which] = min(best[which], r["seconds"])
            best[f"{which}-cpu"] = min(best[f"{which}-cpu"], r["cpu"])
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="the larger work's length")
    p.add_argument("--empty-shots", type=int, default=1000)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--only", choices=["empty", "work"], help="run one size only")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-collect-") as tmp:
        # Byte code cached as a user's installation has it (this machine's shells turn it off).
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env = dict(base, PYTHONPATH=str(REPO / "src"), QEC_KILN_HOME=f"{tmp}/home",
                   QEC_KILN_WORK_DIR=f"{tmp}/work", PYTHONPYCACHEPREFIX=f"{tmp}/pycache")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
              f"num_workers={args.workers}, best of {args.repeats}", flush=True)
        if args.only != "work":
            b = best_of({"tasks": EMPTY, "shots": args.empty_shots, "workers": args.workers},
                        args.repeats, env)
            print(f"empty: sinter {b['sinter']:.2f} s  kiln {b['kiln']:.2f} s  "
                  f"kiln-sinter {b['kiln'] - b['sinter']:+.2f} s   (goal <= 0.5 s); CPU "
                  f"(process tree) kiln-sinter {b['kiln-cpu'] - b['sinter-cpu']:+.2f} s",
                  flush=True)
        if args.only != "empty":
            shots = 20_000
            for _ in range(2):  # scaled twice: the first run's time is mostly start-up
                r = one("sinter", {"tasks": WORK, "shots": shots, "workers": args.workers}, env)
                shots = max(shots, int(shots * args.seconds / max(r["seconds"], 1e-3)))
            b = best_of({"tasks": WORK, "shots": shots, "workers": args.workers},
                        args.repeats, env)
            print(f"work ({shots:,} shots per task): sinter {b['sinter']:.2f} s  kiln "
                  f"{b['kiln']:.2f} s  kiln/sinter {b['kiln'] / b['sinter']:.3f} "
                  f"(goal <= 1.03); CPU kiln/sinter {b['kiln-cpu'] / b['sinter-cpu']:.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fixed start-up of a local sweep: ``qec-kiln launch`` minus plain ``sinter collect``.

Runs, alternating, plain ``sinter collect`` and ``qec-kiln launch`` (a fresh sweep name each
time: discover, plan, upload, run-batch, sinter) on the same 4 circuits at ``--max-shots``
(default 1,000: almost no sampling), ``--repeats`` times each, and keeps each one's fastest
run (a shared machine is noisy), by wall time and by CPU time (user + system of the whole
process tree, which a loaded machine barely changes). ``--before SRC`` also runs another checkout's code
(``PYTHONPATH=SRC``, e.g. ``/work/main/src``) beside it. Prints the load and::

    startup: kiln-sinter = <seconds>     (goal <= 0.3 s)
    startup: kiln/sinter = <ratio>
    startup-cpu: kiln-sinter = <CPU seconds>

Usage::

    python bench/startup.py --repeats 3 --before /work/main/src
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from cores import cpu_now, generate, run_sinter, shots_in, timed  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


def run_kiln(folder: pathlib.Path, bucket: pathlib.Path, name: str, shots: int,
             env: dict[str, str], extra: list[str]) -> float:
    argv = [sys.executable, "-m", "qec_kiln", "launch", str(folder), "--bucket", str(bucket),
            "--name", name, "--max-shots", str(shots), "--max-errors", str(10**9), *extra]
    return timed(argv, env, "launch")[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-shots", type=lambda s: int(float(s)), default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", help="another checkout's src/ to run beside (PYTHONPATH)")
    p.add_argument("--kiln-args", default="", help="extra launch flags, e.g. '--jobs 3'")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="kiln-startup-") as tmp_:
        tmp = pathlib.Path(tmp_)
        paths = generate(tmp / "circuits")
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        base.update(QEC_KILN_HOME=str(tmp / "home"), QEC_KILN_WORK_DIR=str(tmp / "work"),
                    PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
        codes = {"kiln": dict(base, PYTHONPATH=str(REPO / "src"))}
        if args.before:
            codes["before"] = dict(base, PYTHONPATH=args.before)
        times: dict[str, list[float]] = {"sinter": [], **{k: [] for k in codes}}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        loads = []
        for r in range(-1, args.repeats):  # round -1 warms the bytecode caches, untimed
            out = tmp / f"sinter-{r}.csv"
            c0 = cpu_now()
            t = run_sinter(paths, out, args.max_shots, 10**9, cores)
            c = cpu_now() - c0
            assert shots_in([out]) == 4 * args.max_shots
            if r >= 0:
                times["sinter"].append(t)
                cpu["sinter"].append(c)
            for label, env in codes.items():
                name = f"{label}-{r + 1}"
                c0 = cpu_now()
                bucket = tmp / f"bucket-{name}"  # its own: a shared one would top up
                t = run_kiln(tmp / "circuits", bucket, name, args.max_shots, env,
                             args.kiln_args.split())
                c = cpu_now() - c0
                frags = sorted((bucket / name / "fragments").glob("*.csv"))
                assert shots_in(frags) == 4 * args.max_shots, f"{label} took other shots"
                if r >= 0:
                    times[label].append(t)
                    cpu[label].append(c)
            loads.append(os.getloadavg()[0])
            if r >= 0:
                print(" ".join(f"{k}: {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        best = {k: min(v) for k, v in times.items()}
        least = {k: min(v) for k, v in cpu.items()}
        load = f"load {min(loads):.1f}-{max(loads):.1f} on {cores} cores"
        print(" ".join(f"{k} best {v:.2f} s" for k, v in best.items()) + f" ({load})")
        print("CPU: " + " ".join(f"{k} least {v:.2f} s" for k, v in least.items()))
        for label in codes:
            tag = "" if label == "kiln" else f" ({label})"
            print(f"startup{tag}: kiln-sinter = {best[label] - best['sinter']:.2f}")
            print(f"startup{tag}: kiln/sinter = {best[label] / best['sinter']:.3f}")
            print(f"startup-cpu{tag}: kiln-sinter = {least[label] - least['sinter']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

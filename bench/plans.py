#!/usr/bin/env python3
"""Does every local plan run as fast as plain ``sinter collect`` of the same work?

9 rotated surface-code circuits (d = 3, 5, 7; p = 0.001, 0.003, 0.005) x 2 decoders
(pymatching, pymatching-correlated) at ``--max-shots`` each (``--max-errors`` too high to stop
early), about 45 s of work on 2 cores by default. Runs, alternating, plain ``sinter collect
--processes <cores>`` and ``qec-kiln launch`` with the default plan, ``--jobs 3`` and
``--circuits-per-job 4`` (one local worker with every core), ``--repeats`` times each, keeps
each one's fastest wall time and checks that every run took the same shots. ``--before SRC``
also runs ``--jobs 3`` with another checkout's code (``PYTHONPATH=SRC``). Prints the load and
two lines per plan (wall time, and CPU time of the whole process tree)::

    plans: <plan> kiln/sinter = <ratio>      (goal <= 1.05)
    plans-cpu: <plan> kiln/sinter = <ratio>

Usage::

    python bench/plans.py --repeats 2 --before /work/main/src
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import cores  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
DECODERS = ("pymatching", "pymatching-correlated")


def generate(folder: pathlib.Path) -> list[pathlib.Path]:
    return cores.generate(folder, distances=(3, 5, 7), noises=(0.001, 0.003, 0.005))


shots_in = cores.shots_in


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system, the whole tree) per label


def timed(argv: list[str], env: dict[str, str], label: str = "") -> float:
    took, cpu = cores.timed(argv, env)
    CPU.setdefault(label, []).append(cpu)
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-shots", type=lambda s: int(float(s)), default=1_000_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--before", help="another checkout's src/ to run --jobs 3 with (PYTHONPATH)")
    args = p.parse_args(argv)
    n_cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="kiln-plans-") as tmp_:
        tmp = pathlib.Path(tmp_)
        paths = generate(tmp / "circuits")
        want = len(paths) * len(DECODERS) * args.max_shots
        base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        base.update(QEC_KILN_HOME=str(tmp / "home"), QEC_KILN_WORK_DIR=str(tmp / "work"),
                    PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
        mine = dict(base, PYTHONPATH=str(REPO / "src"))
        plans: dict[str, tuple[list[str], dict[str, str]]] = {
            "default": ([], mine), "--jobs 3": (["--jobs", "3"], mine),
            "--circuits-per-job 4": (["--circuits-per-job", "4"], mine)}
        if args.before:
            plans["--jobs 3 (before)"] = (["--jobs", "3"], dict(base, PYTHONPATH=args.before))
        times: dict[str, list[float]] = {"sinter": [], **{k: [] for k in plans}}
        loads = []
        sinter_bin = str(pathlib.Path(sys.executable).with_name("sinter"))
        for r in range(args.repeats):
            out = tmp / f"sinter-{r}.csv"
            times["sinter"].append(timed(
                [sinter_bin, "collect", "--circuits", *map(str, paths), "--decoders", *DECODERS,
                 "--max_shots", str(args.max_shots), "--max_errors", str(10**9),
                 "--processes", str(n_cores), "--save_resume_filepath", str(out),
                 "--metadata_func", "auto", "--quiet"], base, "sinter"))
            assert shots_in([out]) == want, "plain sinter took other shots"
            for i, (label, (extra, env)) in enumerate(plans.items()):
                name = f"r{r}-{i}"
                times[label].append(timed(
                    [sys.executable, "-m", "qec_kiln", "launch", str(tmp / "circuits"),
                     "--bucket", str(tmp / f"bucket-{name}"), "--name", name,
                     "--decoders", *DECODERS,
                     "--max-shots", str(args.max_shots), "--max-errors", str(10**9), *extra],
                    env, label))
                # each its own bucket: a shared one would top up from the last run's rows
                frags = sorted((tmp / f"bucket-{name}" / name / "fragments").glob("*.csv"))
                assert shots_in(frags) == want, f"{label} took other shots"
            loads.append(os.getloadavg()[0])
            print(" ".join(f"{k}: {v[-1]:.1f} s" for k, v in times.items()), flush=True)
        best = {k: min(v) for k, v in times.items()}
        print(f"best of {args.repeats}: " + ", ".join(f"{k} {v:.1f} s" for k, v in best.items())
              + f" (load {min(loads):.1f}-{max(loads):.1f} on {n_cores} cores)")
        for label in plans:
            print(f"plans: {label} kiln/sinter = {best[label] / best['sinter']:.3f}")
            print(f"plans-cpu: {label} kiln/sinter = "
                  f"{min(CPU[label]) / min(CPU['sinter']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

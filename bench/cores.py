#!/usr/bin/env python3
"""Does a local qec-kiln sweep use the machine's cores as well as plain ``sinter collect``?

Generates 4 rotated surface-code memory circuits (d = 5, 7; p = 0.001, 0.003) and runs, side by
side on the same work (``--max-shots`` each, ``--max-errors`` high enough not to stop early):

- plain ``sinter collect --processes <cores>`` (the reference);
- ``qec-kiln launch`` with the local backend's defaults (plan, upload, run the batches, wall time
  of the whole command), and with ``--workers <cores>`` (one slot per core, each sinter pinned to
  its own CPU: before the fix both sinters sat on CPU 0);

alternating them ``--repeats`` times and keeping each one's fastest run (a shared machine is
noisy). It checks that every run took the same shots, and its last line is
``cores: kiln/sinter = <ratio>`` (kiln's default over plain sinter; goal <= 1.10).

Usage::

    python bench/cores.py                    # ~20 s of work per run on 2 cores
    python bench/cores.py --max-shots 2e6 --repeats 3   # ~10 s: the fixed ~1 s of planning shows more

It also holds what the other benches share (``sys.path.insert(0, <bench/>)``, then
``import cores``): the circuits (:func:`generate`), :func:`shots_in`, the timing of commands
(:func:`cpu_now`, :func:`timed`, :func:`run_sinter`, :func:`run_kiln`) and :func:`free_port`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import socket
import subprocess
import sys
import tempfile
import time

import sinter
import stim


def generate(folder: pathlib.Path, distances: tuple[int, ...] = (5, 7),
             noises: tuple[float, ...] = (0.001, 0.003)) -> list[pathlib.Path]:
    """Rotated surface-code memory circuits, every noise knob at ``p``, named as sinter's
    ``--metadata_func auto`` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in distances:
        for p in noises:
            c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=d, rounds=d,
                                       after_clifford_depolarization=p,
                                       before_measure_flip_probability=p,
                                       after_reset_flip_probability=p,
                                       before_round_data_depolarization=p)
            path = folder / f"d={d},p={p},b=X,type=rotated_surface_memory.stim"
            path.write_text(str(c))
            paths.append(path)
    return paths


def shots_in(csv_paths: list[pathlib.Path]) -> int:
    return sum(s.shots for s in sinter.read_stats_from_csv_files(*map(str, csv_paths)))


def cpu_now() -> float:
    """CPU seconds (user + system) of this process's children that have ended and been waited
    for: the difference around a command is the CPU time of its whole process tree."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], env: dict[str, str] | None = None, what: str | None = None
          ) -> tuple[float, float]:
    """Run ``argv`` (its standard output dropped): its wall seconds and the CPU seconds of its
    process tree. A failure exits with ``WHAT failed:`` (default: ``argv[:3]``) and the end of
    its standard error."""
    c0 = cpu_now()
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    took = time.perf_counter() - t0
    cpu = cpu_now() - c0
    if r.returncode:
        raise SystemExit(f"{argv[:3] if what is None else what} failed: {r.stderr.decode()[-2000:]}")
    return took, cpu


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sinter(paths, out: pathlib.Path, shots: int, errors: int, cores: int) -> float:
    sinter_bin = pathlib.Path(sys.executable).with_name("sinter")
    argv = [str(sinter_bin), "collect", "--circuits", *map(str, paths), "--decoders", "pymatching",
            "--max_shots", str(shots), "--max_errors", str(errors), "--processes", str(cores),
            "--save_resume_filepath", str(out), "--metadata_func", "auto", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_kiln(folder: pathlib.Path, bucket: pathlib.Path, name: str, shots: int, errors: int,
             extra: list[str], env: dict) -> float:
    argv = [sys.executable, "-m", "qec_kiln", "launch", str(folder), "--bucket", str(bucket),
            "--name", name, "--max-shots", str(shots), "--max-errors", str(errors), *extra]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-shots", type=lambda s: int(float(s)), default=4_000_000)
    parser.add_argument("--max-errors", type=lambda s: int(float(s)), default=10**9)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="kiln-cores-") as tmp:
        tmp = pathlib.Path(tmp)
        paths = generate(tmp / "circuits")
        env = dict(os.environ, QEC_KILN_HOME=str(tmp / "home"),
                   QEC_KILN_WORK_DIR=str(tmp / "work"))
        times: dict[str, list[float]] = {"sinter": [], "kiln": [], f"kiln --workers {cores}": []}
        for r in range(args.repeats):
            out = tmp / f"sinter-{r}.csv"
            times["sinter"].append(run_sinter(paths, out, args.max_shots, args.max_errors, cores))
            assert shots_in([out]) == 4 * args.max_shots, "plain sinter took other shots"
            for label, extra in (("kiln", []), (f"kiln --workers {cores}",
                                                ["--workers", str(cores)])):
                name = f"r{r}-{len(extra)}"
                bucket = tmp / f"bucket-{name}"  # its own: a shared one would top up (no new shots)
                times[label].append(run_kiln(tmp / "circuits", bucket, name,
                                             args.max_shots, args.max_errors, extra, env))
                frags = sorted((bucket / name / "fragments").glob("*.csv"))
                assert shots_in(frags) == 4 * args.max_shots, f"{label} took other shots"
            print(" ".join(f"{k}: {v[-1]:.1f} s" for k, v in times.items()), flush=True)
        best = {k: min(v) for k, v in times.items()}
        for k, v in best.items():
            print(f"{k:>20s}: best {v:6.1f} s wall  ({v / best['sinter']:.3f}x plain sinter, "
                  f"{cores} cores)")
        print(f"cores: kiln/sinter = {best['kiln'] / best['sinter']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Planning and one-request submission of 2,000 SkyPilot managed jobs, in the dry run.

Writes 100 rotated surface-code circuits (d = 3..11 x 20 noise levels), then runs the whole
``qec-kiln launch CIRCUITS --backend skypilot --dry-run --jobs 2000`` process (targets large
enough that the plan shards the tasks into 2,000 batches; an S3 bucket URL without credentials,
so the dry run shows a fresh plan) ``--repeats`` times after one untimed run (which builds the
wheel the nodes would install, and fills the bytecode cache), and checks what it printed:

- 2,000 batches, submitted in one request (``num_jobs=2000``), SKYPILOT_JOB_RANK k -> batch k;
- the warning that 2,000 jobs at once exceed SkyPilot's default jobs controller (600 running,
  24 launching at a time), with what to do (a pool with ``--workers K``, or a bigger controller).

Prints the median and best seconds, the share of it that is ``import sky`` alone, the load
average, and ``dryrun_2000: seconds/10 = <ratio>`` (goal < 1: under 10 s).

Usage::

    python bench/dryrun_scale.py               # 3 repeats, about a minute
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "bench"))

from cores import cpu_now  # noqa: E402
from generate_surface_codes import main as generate  # noqa: E402
from merge_speed import BIN, bench_env, load  # noqa: E402

NOISE = [f"{0.001 + 0.0005 * i:.4f}" for i in range(20)]
WARNING = ("2000 managed jobs at once is more than SkyPilot's default jobs controller runs "
           "(600 at once, 24 launching at a time")
WHAT_TO_DO = ("Use a pool (--workers K, K <= 600: 2000 batches queue on K warm workers) or a "
              "bigger controller")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiln-dryrun-bench-") as d:
        tmp = pathlib.Path(d)
        circuits = tmp / "circuits"
        generate(["--out", str(circuits), "-d", "3", "5", "7", "9", "11", "-p", *NOISE])
        env = bench_env(tmp)
        env["QEC_KILN_HOME"] = str(tmp / "home")
        for k in [k for k in env if k.startswith("AWS_")]:
            del env[k]
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"), AWS_CONFIG_FILE=str(tmp / "none"),
                   SKYPILOT_DISABLE_USAGE_COLLECTION="1")
        argv_ = [str(BIN / "qec-kiln"), "launch", str(circuits), "--backend", "skypilot",
                 "--dry-run", "--jobs", str(args.jobs), "--bucket", "s3://kiln-dry-bench/sweeps",
                 "--max-shots", str(10**11), "--max-errors", str(10**11)]

        cpu: list[float] = []

        def run() -> tuple[float, str]:
            c0 = cpu_now()
            start = time.perf_counter()
            r = subprocess.run(argv_, capture_output=True, text=True, env=env)
            took = time.perf_counter() - start
            cpu.append(cpu_now() - c0)
            if r.returncode != 0:
                raise SystemExit(f"dry run failed: {r.stderr[-2000:]}")
            return took, r.stdout

        first, out = run()
        cpu.clear()
        n = args.jobs
        checks = {
            f"{n} batches": f"{n} batch(es)" in out.splitlines()[0],
            "one request": f"num_jobs={n})" in out and f"--num-jobs {n}" in out,
            "rank k runs batch k": f"{n - 1}=b{n - 1:04d}" in out or f"{n - 1}=b{n - 1}" in out,
            "controller warning": n < 600 or (WARNING in out and WHAT_TO_DO in out),
        }
        times = [run()[0] for _ in range(args.repeats)]
        start = time.perf_counter()
        subprocess.run([str(BIN / "python"), "-c", "import sky"], env=env, check=True)
        import_sky = time.perf_counter() - start
    for name, ok in checks.items():
        print(f"check {name}: {'ok' if ok else 'MISSING'}")
    warning = next((line for line in out.splitlines() if "Warning:" in line), "")
    print(f"the dry run's warning: {warning.strip()}")
    med = statistics.median(times)
    print(f"dry run of {n} SkyPilot jobs: first run {first:.2f} s (builds the wheel), then median "
          f"{med:.2f} s, best {min(times):.2f} s of {args.repeats} (CPU median "
          f"{statistics.median(cpu):.2f} s); `import sky` alone "
          f"{import_sky:.2f} s; {load()}")
    print(f"dryrun_{n}: seconds/10 = {med / 10:.2f}")
    if not all(checks.values()):
        raise SystemExit("the dry run lacks: " + ", ".join(k for k, ok in checks.items() if not ok))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""``qec-kiln status`` and ``qec-kiln merge`` of a 2,000-batch sweep on S3 (a moto server on
127.0.0.1), each against ``sinter combine`` of the same 2,000 fragments on local disk.

Starts ``moto_server`` on a free loopback port, lays the sweep out in ``s3://kiln-bench/scale``
with the package's own code (``bench/merge_speed.build``: ``prepare_sweep``, ``upload_sweep``
and run-batch's ``write_if`` for each fragment: real sinter rows, 3 tasks x ``--rows`` rows per
fragment) and keeps a copy of every fragment on local disk. Then runs, alternating, ``--repeats``
times each: ``qec-kiln status``, ``qec-kiln merge --out FILE`` (both *cold*: a fresh
``QEC_KILN_HOME`` each run, so nothing read before is at hand; and *warm*: a second run with the
same ``QEC_KILN_HOME``, as a status polled during a sweep, or a merge after a status, finds it)
and ``sinter combine FILES > FILE`` on the local copies. Checks that the merged CSV is byte for
byte sinter's, and prints the medians, the moto server's CPU seconds per command (moto answers
each GET in ~3 ms of its own CPU, on the same 2 cores), the load average, and the lines
``s3_<status|merge>_<cold|warm>: kiln/sinter = <ratio>`` (goal <= 2; ``_base``: the
``--baseline`` checkout's, which caches nothing).

Usage::

    python bench/s3_scale.py                    # 2,000 fragments, 3 repeats (~2 min)
    python bench/s3_scale.py --fragments 500 --repeats 2
    python bench/s3_scale.py --json --baseline /tmp/main/src   # status --json; main's, too
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from cores import free_port  # noqa: E402
from merge_speed import BIN, bench_env, build, load, timed  # noqa: E402

BUCKET = "kiln-bench"


def start_moto(log: pathlib.Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=f, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).read()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"moto_server did not start; see {log}") from None
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fragments", type=int, default=2000)
    p.add_argument("--rows", type=int, default=4, help="rows per planned task in each fragment")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--baseline", type=pathlib.Path, metavar="SRC",
                   help="also time status and merge of another checkout's src/ folder")
    p.add_argument("--json", action="store_true", help="also time `status --json` (no table)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiln-s3-bench-") as d:
        tmp = pathlib.Path(d)
        moto, endpoint = start_moto(tmp / "moto.log")
        try:
            aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                os.environ.pop(k, None)
            os.environ.update(aws)
            import boto3

            boto3.client("s3").create_bucket(Bucket=BUCKET)
            url = f"s3://{BUCKET}/scale"
            t0 = time.perf_counter()
            _, paths = build(tmp, args.fragments, args.rows, bucket_url=url)
            print(f"built {args.fragments} fragments in {url} in {time.perf_counter() - t0:.1f} s",
                  flush=True)
            env = {**bench_env(tmp), **aws}
            homes = iter(range(10**6))

            def home(warm: bool) -> dict[str, str]:
                return {**env, "QEC_KILN_HOME": str(tmp / ("warm" if warm else f"cold{next(homes)}"))}

            kiln = str(BIN / "qec-kiln")
            status = [kiln, "status", "--bucket", url, "--sweep", "bench"]
            merge = [kiln, "merge", "--bucket", url, "--sweep", "bench", "--out", str(tmp / "k.csv")]
            plain = [str(BIN / "sinter"), "combine", *map(str, paths)]
            # Untimed: fill the bytecode cache, the warm QEC_KILN_HOME, and check the output.
            timed(status, home(True))
            merged = timed(merge, home(True), tmp / "k.csv")[2]
            if merged != timed(plain, env, tmp / "s.csv")[2]:
                raise SystemExit("qec-kiln merge of the S3 sweep and sinter combine differ")
            cases: dict[str, tuple[list[str], dict[str, str] | bool | None, pathlib.Path | None]] = {
                "sinter": (plain, env, tmp / "s.csv"),
                "status_cold": (status, None, None), "merge_cold": (merge, None, tmp / "k.csv"),
                "status_warm": (status, True, None), "merge_warm": (merge, True, tmp / "k.csv"),
            }
            if args.json:
                cases.update(status_json_cold=(status + ["--json"], None, None),
                             status_json_warm=(status + ["--json"], True, None))
            if args.baseline:
                base = {**bench_env(tmp, args.baseline.resolve()), **aws,
                        "QEC_KILN_HOME": str(tmp / "base-home")}
                timed(status, base)
                if timed(merge, base, tmp / "k.csv")[2] != merged:
                    raise SystemExit("the baseline's merge wrote another CSV")
                cases.update(status_base=(status, base, None), merge_base=(merge, base, tmp / "k.csv"))
            wall: dict[str, list[float]] = {k: [] for k in cases}
            server: dict[str, list[float]] = {k: [] for k in cases}
            names = list(cases)
            for rep in range(args.repeats):
                for name in names if rep % 2 == 0 else names[::-1]:
                    argv_, e, out = cases[name]
                    run_env = e if isinstance(e, dict) else home(bool(e))
                    before = cpu_seconds(moto.pid)
                    w, _, data = timed(argv_, run_env, out)
                    server[name].append(cpu_seconds(moto.pid) - before)
                    wall[name].append(w)
                    if name.startswith("merge") and data != merged:
                        raise SystemExit(f"{name} wrote another CSV")
        finally:
            moto.kill()
            moto.wait()
    med = {k: statistics.median(v) for k, v in wall.items()}
    print(f"{args.fragments} fragments on S3 (moto), median of {args.repeats} alternating runs: "
          + "; ".join(f"{k} {med[k]:.2f} s (moto CPU {statistics.median(server[k]):.2f} s)"
                      for k in cases))
    print(load())
    for k in cases:
        if k != "sinter":
            print(f"s3_{k}: kiln/sinter = {med[k] / med['sinter']:.2f}")


if __name__ == "__main__":
    main()

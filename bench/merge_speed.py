#!/usr/bin/env python3
"""Wall time of ``qec-kiln merge`` vs ``sinter combine`` on the same 2,000 local fragments.

Builds a sweep of 6 small surface-code circuits whose plan has 2,000 batches (each task in
shot shards over many batches), takes real rows from one tiny ``sinter collect`` of those
circuits, and writes each batch's fragment with sinter's own CSV functions (``--rows`` rows per
planned task, each with distinct valid values). Then runs, alternating, the whole
``qec-kiln merge`` process and the whole ``sinter combine`` process on those fragments,
``--repeats`` times each, checks that both printed the same bytes, and prints the medians.
The last line is ``merge: kiln/sinter = <ratio>`` (below 1: qec-kiln is faster).

Usage::

    python bench/merge_speed.py                 # 2,000 fragments, 7 repeats
    python bench/merge_speed.py --fragments 500 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))

import sinter  # noqa: E402
from generate_surface_codes import main as generate  # noqa: E402

from qec_kiln._launch import Sweep, prepare_sweep  # noqa: E402
from qec_kiln._storage import open_bucket  # noqa: E402
from qec_kiln._sweep.batches import Batch, Plan, Shard, batch_id, split_targets  # noqa: E402
from qec_kiln._sweep.manifest import fragment_key  # noqa: E402
from qec_kiln._sweep.store import upload_sweep  # noqa: E402

BIN = pathlib.Path(sys.executable).parent


def real_rows(circuits: pathlib.Path, tmp: pathlib.Path) -> dict[str, sinter.TaskStats]:
    """One row per circuit from a tiny real ``sinter collect`` (the templates of every row)."""
    out = tmp / "tiny.csv"
    subprocess.run([str(BIN / "sinter"), "collect", "--circuits", *map(str, sorted(circuits.glob("*.stim"))),
                    "--decoders", "pymatching", "--max_shots", "100", "--max_errors", "100",
                    "--processes", "1", "--metadata_func", "auto", "--save_resume_filepath", str(out),
                    "--quiet"], check=True)
    return {s.strong_id: s for s in sinter.read_stats_from_csv_files(str(out))}


def build(tmp: pathlib.Path, n_fragments: int, rows: int) -> tuple[pathlib.Path, list[pathlib.Path]]:
    circuits = tmp / "circuits"
    generate(["--out", str(circuits), "-d", "3", "5", "-p", "0.001", "0.003", "0.01"])
    bucket_dir = tmp / "bucket"
    bucket = open_bucket(str(bucket_dir))
    max_shots = 10**9
    spec = Sweep.build(str(circuits), dict(decoders=["pymatching"], max_shots=max_shots,
                     max_errors=10**9, name="bench", jobs=1))
    prepared = prepare_sweep(spec, bucket, lambda s: None)
    m = prepared.manifest
    templates = real_rows(circuits, tmp)
    tasks = [s for b in m.batches for s in b.shards]
    assert {t.strong_id for t in tasks} == set(templates), "sinter's strong_ids differ from the plan's"
    # 2,000 batches, each with the shards of 3 of the 6 tasks (task t in every batch i with
    # (i + t) % 2 == 0, so each task is split over 1,000 batches).
    shard_lists: list[list[Shard]] = [[] for _ in range(n_fragments)]
    for t_i, t in enumerate(tasks):
        mine = [i for i in range(n_fragments) if (i + t_i) % 2 == 0]
        shots = split_targets(max_shots, len(mine))
        errors = split_targets(10**9, len(mine))
        for j, i in enumerate(mine):
            shard_lists[i].append(Shard(t.circuit, t.decoder, t.strong_id, shots[j], errors[j],
                                        1.0, float(shots[j]), index=j, count=len(mine)))
    m.plan = Plan([Batch(batch_id(i), s) for i, s in enumerate(shard_lists)], max_shots, 10**9, "bench")
    upload_sweep(bucket, prepared.manifest, prepared.circuits, lambda s: None)
    paths = []
    for i, b in enumerate(m.batches):
        lines = [sinter.CSV_HEADER]
        for s in b.shards:
            t = templates[s.strong_id]
            for r in range(rows):
                lines.append(sinter.TaskStats(
                    strong_id=t.strong_id, decoder=t.decoder, json_metadata=t.json_metadata,
                    shots=1000 + 17 * i + r, errors=(i * 7 + r) % 50, discards=0,
                    seconds=0.25 + 0.001 * ((i + r) % 97)).to_csv_line())
        bucket.write_bytes(fragment_key(m.sweep, b.id), ("\n".join(lines) + "\n").encode())
        paths.append(bucket_dir / fragment_key(m.sweep, b.id))
    return bucket_dir, paths


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user + system, its children included) and standard output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env=env)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {r.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return took, cpu, r.stdout


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fragments", type=int, default=2000)
    p.add_argument("--rows", type=int, default=4, help="rows per planned task in each fragment")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kiln-merge-bench-") as d:
        tmp = pathlib.Path(d)
        # Both commands start from compiled bytecode, as an installed package does (even where
        # PYTHONDONTWRITEBYTECODE is set): a shared cache, filled by one untimed run of each.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), PYTHONPATH=os.pathsep.join(
            [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
        bucket, paths = build(tmp, args.fragments, args.rows)
        kiln = [str(BIN / "qec-kiln"), "merge", "--bucket", str(bucket), "--sweep", "bench", "--out", "-"]
        plain = [str(BIN / "sinter"), "combine", *map(str, paths)]
        if timed(kiln, env)[2] != timed(plain, env)[2]:
            raise SystemExit("qec-kiln merge and sinter combine printed different CSVs")
        wall: dict[str, list[float]] = {"kiln": [], "sinter": []}
        cpu: dict[str, list[float]] = {"kiln": [], "sinter": []}
        for rep in range(args.repeats):
            order = [("kiln", kiln), ("sinter", plain)]
            for name, cmd in order if rep % 2 == 0 else order[::-1]:
                w, c, _ = timed(cmd, env)
                wall[name].append(w)
                cpu[name].append(c)
    k, s = statistics.median(wall["kiln"]), statistics.median(wall["sinter"])
    kc, sc = statistics.median(cpu["kiln"]), statistics.median(cpu["sinter"])
    rows = args.fragments * 3 * args.rows
    print(f"{args.fragments} fragments, {rows:,} rows; median of {args.repeats} alternating runs: "
          f"qec-kiln merge {k:.3f} s, sinter combine {s:.3f} s wall; CPU {kc:.3f} s vs {sc:.3f} s "
          f"(kiln/sinter {kc / sc:.2f}); load average {os.getloadavg()[0]:.1f} on "
          f"{len(os.sched_getaffinity(0))} cores")
    print(f"merge: kiln/sinter = {k / s:.2f}")


if __name__ == "__main__":
    main()

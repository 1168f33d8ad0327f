#!/usr/bin/env python3
"""Wall time of ``qec-kiln merge`` vs ``sinter combine`` on the same 200 and 2,000 local fragments.

Builds a sweep of 6 small surface-code circuits whose plan has 2,000 batches (each task in
shot shards over many batches), takes real rows from one tiny ``sinter collect`` of those
circuits, and writes each batch's fragment with sinter's own CSV functions (``--rows`` rows per
planned task, each with distinct valid values). Then runs, alternating, the whole
``qec-kiln merge`` process and the whole ``sinter combine`` process on those fragments,
``--repeats`` times each, both writing a file (``merge --out FILE``; ``sinter combine > FILE``)
and both printing to a pipe (``merge --out -``), checks that all four wrote the same bytes, and
prints the medians. The last lines are ``merge_<N>_<file|stdout>: kiln/sinter = <ratio>`` (below
1: qec-kiln is faster), after the load average.

Usage::

    python bench/merge_speed.py                 # 200 and 2,000 fragments, 7 repeats
    python bench/merge_speed.py --fragments 500 --repeats 3
    python bench/merge_speed.py --baseline /tmp/main/src   # and main's qec-kiln, side by side
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

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "src"))  # this checkout's qec_kiln, as the timed commands get
sys.path.insert(0, str(REPO / "bench"))

import sinter  # noqa: E402
from cores import cpu_now  # noqa: E402
from generate_surface_codes import main as generate  # noqa: E402

from qec_kiln._prepare import Fleet, prepare_sweep  # noqa: E402
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


def build(tmp: pathlib.Path, n_fragments: int, rows: int,
          bucket_url: str | None = None) -> tuple[str, list[pathlib.Path]]:
    """The sweep ``bench`` of ``n_fragments`` batches in ``bucket_url`` (default: the folder
    ``tmp/bucket``), laid out by the package's own code (``prepare_sweep``, ``upload_sweep``, and
    each fragment created as run-batch's first upload creates it, ``write_if(key, data, None)``),
    and the local paths of the same fragments (those in the folder, or copies under
    ``tmp/local`` for a cloud bucket) for ``sinter combine``."""
    circuits = tmp / "circuits"
    generate(["--out", str(circuits), "-d", "3", "5", "-p", "0.001", "0.003", "0.01"])
    bucket_url = bucket_url or str(tmp / "bucket")
    bucket = open_bucket(bucket_url)
    local = tmp / "bucket" if bucket_url == str(tmp / "bucket") else tmp / "local"
    max_shots = 10**9
    fleet = Fleet.build(dict(decoders=["pymatching"], max_shots=max_shots, max_errors=10**9,
                             name="bench", jobs=1))
    prepared = prepare_sweep(str(circuits), fleet, bucket, lambda s: None)
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
        data = ("\n".join(lines) + "\n").encode()
        bucket.write_if(fragment_key(m.sweep, b.id), data, None)
        path = local / fragment_key(m.sweep, b.id)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        paths.append(path)
    return bucket_url, paths


def timed(argv: list[str], env: dict[str, str], out: pathlib.Path | None = None
          ) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user + system, its children included) and what it printed
    (standard output, or the file ``out`` when it writes there, whoever opens it: sinter combine
    prints to the file given as its standard output, as a shell's ``>`` does)."""
    c0 = cpu_now()
    start = time.perf_counter()
    if out is not None and "--out" not in argv:
        with open(out, "wb") as f:
            r = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, env=env)
    else:
        r = subprocess.run(argv, capture_output=True, env=env)
    took = time.perf_counter() - start
    cpu = cpu_now() - c0
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {r.stderr.decode()[-2000:]}")
    return took, cpu, out.read_bytes() if out is not None else r.stdout


def bench_env(tmp: pathlib.Path, src: pathlib.Path = REPO / "src") -> dict[str, str]:
    """Both commands start from compiled bytecode, as an installed package does (even where
    PYTHONDONTWRITEBYTECODE is set): a cache per ``src`` (the qec_kiln the commands run),
    filled by the first (untimed) run of each."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(tmp / f"pycache-{abs(hash(str(src)))}"),
               PYTHONPATH=os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def compare(cases: dict[str, tuple[list[str], pathlib.Path | None, dict[str, str]]],
            repeats: int) -> dict[str, tuple[float, float]]:
    """Each case (argv, output file, environment) ``repeats`` times, in an order that turns
    round every repeat (so that no case always runs first or last on a busy machine):
    ``name -> (median wall, median CPU)``."""
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            w, c, _ = timed(cases[name][0], cases[name][2], cases[name][1])
            wall[name].append(w)
            cpu[name].append(c)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in cases}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {len(os.sched_getaffinity(0))} cores"


def run_size(tmp: pathlib.Path, n: int, rows: int, repeats: int, env: dict[str, str],
             baseline: dict[str, str] | None = None) -> list[str]:
    """The ``name: ratio`` lines of one size: ``merge --out FILE`` vs ``sinter combine > FILE``
    and ``merge --out -`` vs ``sinter combine`` to a pipe (and the same of the ``baseline``
    checkout's qec-kiln, run in the same rounds)."""
    bucket, paths = build(tmp, n, rows)
    kiln = [str(BIN / "qec-kiln"), "merge", "--bucket", str(bucket), "--sweep", "bench"]
    plain = [str(BIN / "sinter"), "combine", *map(str, paths)]
    cases = {"kiln_file": (kiln + ["--out", str(tmp / "kiln.csv")], tmp / "kiln.csv", env),
             "sinter_file": (plain, tmp / "sinter.csv", env),
             "kiln_stdout": (kiln + ["--out", "-"], None, env),
             "sinter_stdout": (plain, None, env)}
    if baseline is not None:
        cases.update(base_file=(kiln + ["--out", str(tmp / "base.csv")], tmp / "base.csv", baseline),
                     base_stdout=(kiln + ["--out", "-"], None, baseline))
    printed = {k: timed(argv, e, out)[2] for k, (argv, out, e) in cases.items()}
    if len(set(printed.values())) != 1 or not printed["sinter_stdout"]:
        raise SystemExit(f"{n} fragments: qec-kiln merge and sinter combine wrote different CSVs")
    got = compare(cases, repeats)
    print(f"{n} fragments, {n * 3 * rows:,} rows; median of {repeats} alternating runs: "
          + "; ".join(f"{k} {w:.3f} s (CPU {c:.3f} s)" for k, (w, c) in got.items())
          + f"; {load()}", flush=True)
    lines = []
    for who in ("kiln", "base") if baseline is not None else ("kiln",):
        for out in ("file", "stdout"):
            k, s = got[f"{who}_{out}"], got[f"sinter_{out}"]
            lines.append(f"merge_{n}_{out}{' (baseline)' if who == 'base' else ''}: kiln/sinter = "
                         f"{k[0] / s[0]:.2f} (CPU {k[1] / s[1]:.2f})")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fragments", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--rows", type=int, default=4, help="rows per planned task in each fragment")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--baseline", type=pathlib.Path, metavar="SRC",
                   help="also time the qec_kiln of another checkout's src/ folder (e.g. main's "
                   "from `git archive`) in the same rounds")
    args = p.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory(prefix="kiln-merge-bench-") as d:
        env = bench_env(pathlib.Path(d))
        base = bench_env(pathlib.Path(d), args.baseline.resolve()) if args.baseline else None
        for n in args.fragments:
            tmp = pathlib.Path(d) / str(n)
            tmp.mkdir()
            lines += run_size(tmp, n, args.rows, args.repeats, env, base)
    print(load())
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()

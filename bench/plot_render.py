#!/usr/bin/env python3
"""Render time of the page's threshold plot (sinter's own plotting, SVG and PNG) for the
30-circuit demo sweep and for 1,000 tasks.

The rows are synthetic ``sinter.TaskStats`` (rendering depends on how many points and curves
there are, not on how they were sampled): the demo's 30 tasks (d = 3..13 x 5 noises, the
metadata of ``examples/generate_surface_codes.py``) and 1,000 tasks (10 distances x 100
noises). Half of each is "still sampling" (ringed). Prints the median of ``--repeats`` renders
per case, last line ``plot: demo30 svg=<s> png=<s>; tasks1000 svg=<s> png=<s>``.

Usage::

    python bench/plot_render.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import sinter

from qec_kiln._view.plot import PlotSpec, render


def stats_for(distances, noises) -> list[sinter.TaskStats]:
    out = []
    for d in distances:
        for p in noises:
            shots = 500_000
            p_l = min(0.4, 0.1 * (p / 0.01) ** ((d + 1) / 2))
            out.append(sinter.TaskStats(
                strong_id=f"{d}-{p}", decoder="pymatching", shots=shots,
                errors=max(1, int(shots * p_l)), seconds=shots * 1e-5,
                json_metadata={"b": "X", "d": d, "p": p, "type": "rotated_surface_memory"}))
    return out


def timed(stats, fmt: str, repeats: int) -> float:
    spec = PlotSpec().with_defaults({"d", "p"}, ["pymatching"])
    reached = {s.strong_id for s in stats[::2]}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        render(stats, reached=reached, spec=spec, fmt=fmt)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    render(stats_for((3,), (0.001,)), reached=set(), spec=PlotSpec())  # imports, fonts
    cases = {"demo30": stats_for((3, 5, 7, 9, 11, 13), (0.001, 0.003, 0.005, 0.008, 0.01)),
             "tasks1000": stats_for(range(3, 23, 2), [0.0005 + 0.0001 * i for i in range(100)])}
    result = {}
    for name, stats in cases.items():
        for fmt in ("svg", "png"):
            result[name, fmt] = timed(stats, fmt, args.repeats)
            print(f"{name} ({len(stats)} tasks) {fmt}: {result[name, fmt]:.3f} s", flush=True)
    print("plot: " + "; ".join(f"{n} svg={result[n, 'svg']:.3f} png={result[n, 'png']:.3f}"
                               for n in cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())

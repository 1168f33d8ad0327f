#!/usr/bin/env python3
"""Write the sweep of the original qec-kiln README: rotated surface-code X-memory experiments.

One file per (distance, noise) named ``d={d},p={p},b=X,type=rotated_surface_memory.stim``, so that
``sinter collect --metadata_func auto`` (and qec-kiln) read ``d``, ``p``, ``b`` and ``type`` from the
name. Every noise knob of stim's generator is set to ``p``; ``rounds = d``.

Example::

    python examples/generate_surface_codes.py --out circuits/                 # the 30 circuits
    python examples/generate_surface_codes.py --out small/ -d 3 5 -p 0.001 0.01  # 4 circuits
"""

from __future__ import annotations

import argparse
import pathlib

import stim

DISTANCES = (3, 5, 7, 9, 11, 13)
NOISES = (0.001, 0.003, 0.005, 0.008, 0.01)


def surface_code_circuit(d: int, p: float) -> stim.Circuit:
    return stim.Circuit.generated(
        "surface_code:rotated_memory_x",
        distance=d,
        rounds=d,
        after_clifford_depolarization=p,
        after_reset_flip_probability=p,
        before_measure_flip_probability=p,
        before_round_data_depolarization=p,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="circuits", help="output folder (default: circuits)")
    parser.add_argument("-d", "--distances", type=int, nargs="+", default=list(DISTANCES))
    parser.add_argument("-p", "--noise", type=float, nargs="+", default=list(NOISES))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in args.distances:
        for p in args.noise:
            path = out / f"d={d},p={p},b=X,type=rotated_surface_memory.stim"
            path.write_text(str(surface_code_circuit(d, p)) + "\n")
            n += 1
    print(f"wrote {n} circuits to {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Shots per second of the tsim sampler (qec_kiln.tsim) vs plain stim + the same decoder.

For each circuit, measured side by side in one run on this machine:

- ``setup s``: the tsim task's compile time (ZX compilation, noiseless reference check, JAX
  compilation of the first batch): what each sinter worker pays once per task;
- ``tsim/s``: shots per second of the compiled tsim sampler as sinter calls it (tsim sampling,
  reference XOR, decoding);
- ``tsim-only/s``: tsim sampling alone (no decoding);
- ``stim/s``: plain stim sampling + the same decoder with the same detector error model, i.e. what
  ``sinter collect --decoders pymatching`` does (on a tagged circuit it simulates the *wrong*,
  Clifford circuit: listed as the cost reference only);
- ``stim/tsim``: how many times faster plain stim is.

Default circuits (written by examples/generate_tsim_circuits.py): ``rep_t_memory`` at d = 3, 5, 7
(one T and one T-dagger), and the same circuits with the T and T-dagger on every data qubit
(``+Tall``: 2d T gates, a heavier load for tsim's stabilizer-rank decomposition).

Usage::

    python bench/tsim_throughput.py                         # defaults, ~2 min on 2 cores
    python bench/tsim_throughput.py my/*.stim --seconds 5 --batch-size 65536
    JAX_PLATFORMS=cuda python bench/tsim_throughput.py --json gpu.json   # fail if no GPU

The device line names what JAX sampled on (``cpu`` or the GPU model), the CPU count and the load
average, since other work on the machine slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))

import sinter  # noqa: E402
import stim  # noqa: E402
from generate_tsim_circuits import repetition_t_memory  # noqa: E402

from qec_kiln.tsim import TsimSampler, jax_backend  # noqa: E402


def default_circuits(noise: float) -> list[tuple[str, stim.Circuit]]:
    out = []
    for all_data in (False, True):
        for d in (3, 5, 7):
            text = repetition_t_memory(d, noise)
            label = f"rep_t_memory d={d} p={noise}"
            if all_data:
                data = " ".join(str(2 * i) for i in range(d))
                text = text.replace("S[T] 0\n", f"S[T] {data}\n")
                text = text.replace("S_DAG[T] 0\n", f"S_DAG[T] {data}\n")
                label += " +Tall"
            out.append((label, stim.Circuit(text)))
    return out


def t_count(circuit: stim.Circuit) -> int:
    return sum(
        len(inst.targets_copy())
        for inst in circuit.flattened()
        if inst.tag and inst.name in ("S", "S_DAG", "I", "SPP", "SPP_DAG")
    )


def rate(step, seconds: float) -> tuple[float, int, float]:
    """Call ``step()`` (returns shots) until ``seconds`` pass: (shots/s, shots, elapsed)."""
    shots, t0 = 0, time.perf_counter()
    while True:
        shots += step()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return shots / elapsed, shots, elapsed


def measure(label: str, circuit: stim.Circuit, *, decoder: str, batch_size: int | None,
            seconds: float) -> dict:
    dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    task = sinter.Task(circuit=circuit, decoder="tsim", detector_error_model=dem)
    t0 = time.perf_counter()
    compiled = TsimSampler(decoder=decoder, batch_size=batch_size).compiled_sampler_for_task(task)
    setup = time.perf_counter() - t0
    per_call = 4 * compiled.batch_size
    errors = [0, 0]

    def tsim_step() -> int:
        stats = compiled.sample(per_call)
        errors[0] += stats.errors
        errors[1] += stats.shots
        return stats.shots

    def tsim_only_step() -> int:
        dets, _ = compiled._sampler.sample(per_call, batch_size=compiled.batch_size,
                                           separate_observables=True, bit_packed=True)
        return len(dets)

    stim_sampler = circuit.compile_detector_sampler()
    stim_decoder = sinter.BUILT_IN_DECODERS[decoder].compile_decoder_for_dem(dem=dem)
    stim_errors = [0, 0]

    def stim_step() -> int:
        dets, obs = stim_sampler.sample(per_call, separate_observables=True, bit_packed=True)
        pred = stim_decoder.decode_shots_bit_packed(bit_packed_detection_event_data=dets)
        stim_errors[0] += int((pred != obs).any(axis=1).sum())
        stim_errors[1] += len(dets)
        return len(dets)

    tsim_rate, _, _ = rate(tsim_step, seconds)
    tsim_only, _, _ = rate(tsim_only_step, seconds)
    stim_rate, _, _ = rate(stim_step, seconds)
    return {
        "circuit": label,
        "t_gates": t_count(circuit),
        "detectors": circuit.num_detectors,
        "batch_size": compiled.batch_size,
        "setup_seconds": round(setup, 2),
        "tsim_shots_per_second": round(tsim_rate),
        "tsim_sample_only_shots_per_second": round(tsim_only),
        "stim_shots_per_second": round(stim_rate),
        "stim_over_tsim": round(stim_rate / tsim_rate, 1),
        "tsim_logical_error_rate": errors[0] / max(1, errors[1]),
        "stim_logical_error_rate": stim_errors[0] / max(1, stim_errors[1]),
    }


def device_line() -> str:
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "") or platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"JAX {jax.__version__} on {jax_backend()} ({kind}); {os.cpu_count()} CPUs; "
            f"load average {load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("circuits", nargs="*", type=pathlib.Path,
                        help=".stim files (default: the rep_t_memory set described above)")
    parser.add_argument("--noise", type=float, default=0.01, help="p of the default circuits")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per measurement (default 3)")
    parser.add_argument("--batch-size", type=int,
                        help="tsim shots per JAX batch (default: qec_kiln.tsim's)")
    parser.add_argument("--decoder", default="pymatching", help="sinter decoder (default pymatching)")
    parser.add_argument("--json", type=pathlib.Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    if args.circuits:
        circuits = [(p.name, stim.Circuit.from_file(p)) for p in args.circuits]
    else:
        circuits = default_circuits(args.noise)
    device = device_line()
    print(device, flush=True)
    header = (f"{'circuit':<34} {'T':>3} {'batch':>6} {'setup s':>7} {'tsim/s':>9} "
              f"{'tsim-only/s':>11} {'stim/s':>9} {'stim/tsim':>9}  p_L tsim / stim")
    print(header)
    print("-" * len(header))
    rows = []
    for label, circuit in circuits:
        row = measure(label, circuit, decoder=args.decoder, batch_size=args.batch_size,
                      seconds=args.seconds)
        rows.append(row)
        print(f"{label:<34} {row['t_gates']:>3} {row['batch_size']:>6} "
              f"{row['setup_seconds']:>7.1f} {row['tsim_shots_per_second']:>9,} "
              f"{row['tsim_sample_only_shots_per_second']:>11,} "
              f"{row['stim_shots_per_second']:>9,} {row['stim_over_tsim']:>9.1f}  "
              f"{row['tsim_logical_error_rate']:.4f} / {row['stim_logical_error_rate']:.4f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

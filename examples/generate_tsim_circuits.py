#!/usr/bin/env python3
"""Write small Clifford+T circuits for the tsim sampler: a repetition-code memory with a logical T.

Each circuit is a distance-``d`` bit-flip repetition code (data qubits 0, 2, ..., ancillas 1, 3, ...)
that holds a logical |+>, with ``rounds = d`` rounds of ZZ stabilizer measurements between a logical
T and a logical T-dagger. On the bit-flip code a T on data qubit 0 *is* the logical T (it phases
|1...1>), so in tsim's (bloqade-tsim) notation the circuit carries the two tagged gates::

    S[T] 0          # logical T      (tsim: T;  plain stim: ignores the tag -> S)
    ...             # d rounds of noisy syndrome extraction
    S_DAG[T] 0      # logical T_DAG  (tsim: T_DAG; plain stim: S_DAG)

after which the code is unencoded and the logical X observable is measured. Without noise the
T/T-dagger pair cancels, so every detector and the observable are deterministic, under tsim's reading
and under plain stim's alike (sinter and qec-kiln need the latter for the detector error model).

Noise ("phenomenological bit-flip"): ``X_ERROR(p)`` on every data qubit before each round and once
more before the T-dagger, and ``X_ERROR(p)`` on every ancilla before it is measured. Gates,
encoding and final read-out are noiseless, so every data error happens between T and T-dagger.

Why the tag matters: an X error on qubit 0 between the two gates becomes, in plain stim's S-reading,
a Y error that the detector error model knows about, and pymatching corrects it. With a real T it
becomes X followed by an S-dagger (T_DAG X T = e^{i pi/4} S_DAG X), a non-Pauli error that no
Pauli-frame decoder can undo: about half of those shots fail. So tsim reports a logical error rate
several times larger than ``sinter collect`` with plain stim would (silently) report.

Two types are written per (d, p), with names ``d={d},p={p},type={type}.stim`` that
``--metadata_func auto`` reads:

- ``type=rep_t_memory``: the circuit above (tsim-tagged; plain stim would simulate it wrongly).
- ``type=rep_s_memory``: the same circuit with untagged ``S``/``S_DAG`` (Clifford): exactly the
  circuit that plain stim simulates when it ignores the tags. Sampled with the tsim sampler too, it
  is the control: tsim and stim agree on it.

Examples::

    python examples/generate_tsim_circuits.py --out tsim_circuits/              # 2 x 3 x 3 = 18
    python examples/generate_tsim_circuits.py --out small/ -d 3 -p 0.02 --types rep_t_memory

Collect them with qec-kiln (discovery refuses the tagged circuits without the tsim sampler)::

    qec-kiln launch tsim_circuits/ --decoders tsim \\
        --custom-decoders-module-function qec_kiln.tsim:sinter_samplers \\
        --max-shots 100000 --max-errors 1000 --bucket kiln-results

or with the unmodified sinter CLI::

    sinter collect --circuits tsim_circuits/*.stim --metadata_func auto --decoders tsim \\
        --custom_decoders_module_function qec_kiln.tsim:sinter_samplers \\
        --max_shots 100000 --max_errors 1000 --processes 1 --save_resume_filepath tsim.csv

Both need ``pip install bloqade-tsim`` (GPU: ``pip install 'bloqade-tsim[cuda12]'``) on the
machines that sample; see docs/gpu.md.
"""

from __future__ import annotations

import argparse
import pathlib

DISTANCES = (3, 5, 7)
NOISES = (0.01, 0.02, 0.05)
TYPES = ("rep_t_memory", "rep_s_memory")


def repetition_t_memory(d: int, p: float, *, rounds: int | None = None, tagged: bool = True) -> str:
    """Stim program text of the repetition-code memory with a logical T ... T_DAG sandwich.

    ``tagged=False`` gives the Clifford twin (plain ``S``/``S_DAG``), i.e. what plain stim
    simulates when it ignores the tags. ``p = 0`` gives the noiseless circuit.
    """
    if d < 2:
        raise ValueError(f"distance must be at least 2, got {d}")
    if not 0 <= p <= 0.5:
        raise ValueError(f"noise p must be in [0, 0.5], got {p}")
    rounds = d if rounds is None else rounds
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    data = [2 * i for i in range(d)]
    anc = [2 * i + 1 for i in range(d - 1)]
    t_gate, t_dag = ("S[T]", "S_DAG[T]") if tagged else ("S", "S_DAG")
    join = " ".join

    def noise(qubits: list[int]) -> list[str]:
        return [f"X_ERROR({p}) {join(map(str, qubits))}"] if p > 0 else []

    lines = [f"R {join(map(str, data + anc))}", "H 0"]
    lines += [f"CX 0 {q}" for q in data[1:]]  # logical |+> = (|0..0> + |1..1>)/sqrt(2)
    lines += ["TICK", f"{t_gate} 0", "TICK"]  # logical T
    for r in range(rounds):
        lines += noise(data)
        lines.append("CX " + join(f"{data[i]} {anc[i]}" for i in range(d - 1)))
        lines.append("CX " + join(f"{data[i + 1]} {anc[i]}" for i in range(d - 1)))
        lines += noise(anc)
        lines.append(f"MR {join(map(str, anc))}")
        for i in range(d - 1):
            k = d - 1 - i  # ancilla i is rec[-k] of this round
            lines.append(f"DETECTOR({2 * i + 1}, {r}) rec[-{k}]" + (
                f" rec[-{k + d - 1}]" if r > 0 else ""))
        lines.append("TICK")
    lines += noise(data)
    lines += [f"{t_dag} 0", "TICK"]  # logical T_DAG
    lines += [f"CX 0 {q}" for q in reversed(data[1:])]  # unencode
    lines += ["H 0", f"M {join(map(str, data))}"]
    # Data qubit j (j >= 1) now holds Z_0 Z_j = the product of the last round's ancillas 0..j-1.
    for j in range(1, d):
        recs = [f"rec[-{d - j}]"] + [f"rec[-{2 * d - 1 - i}]" for i in range(j)]
        lines.append(f"DETECTOR({2 * j}, {rounds}) {join(recs)}")
    lines.append(f"OBSERVABLE_INCLUDE(0) rec[-{d}]")  # qubit 0 holds the logical X
    return "\n".join(lines) + "\n"


def file_name(d: int, p: float, kind: str) -> str:
    return f"d={d},p={p},type={kind}.stim"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tsim_circuits",
                        help="output folder (default: tsim_circuits)")
    parser.add_argument("-d", "--distances", type=int, nargs="+", default=list(DISTANCES),
                        help=f"code distances, rounds = d (default: {DISTANCES})")
    parser.add_argument("-p", "--noise", type=float, nargs="+", default=list(NOISES),
                        help=f"bit-flip probabilities (default: {NOISES})")
    parser.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES),
                        help="rep_t_memory (tagged T) and/or rep_s_memory (Clifford control)")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for kind in args.types:
        for d in args.distances:
            for p in args.noise:
                text = repetition_t_memory(d, p, tagged=kind == "rep_t_memory")
                (out / file_name(d, p, kind)).write_text(text)
                n += 1
    print(f"wrote {n} circuits to {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

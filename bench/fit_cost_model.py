"""Measure what sinter tasks cost on this machine and refit qec-kiln's cost model.

Writes ``src/qec_kiln/data/cost_model.json``, which ``qec_kiln._planning._cost`` loads. Run it from the
repository root after a stim/sinter/pymatching upgrade or on a new kind of machine::

    .venv/bin/python bench/fit_cost_model.py             # measure and fit: ~3 min on 2 cores
                                                         # (~5 min with all optional decoders)
    .venv/bin/python bench/fit_cost_model.py --refit     # refit the measurements stored in the JSON
    .venv/bin/python bench/fit_cost_model.py --quick --out /tmp/m.json   # smoke test, ~40 s

What it measures (one sinter worker, ``sinter.collect(num_workers=1)``, the machine otherwise idle):

1. Seconds per shot (``stats.seconds / stats.shots``) of stim sampling + decoding on generated
   circuits: ``surface_code:rotated_memory_x`` for d = 3..13 (odd, rounds = d) and
   p in {0.001, 0.003, 0.005, 0.008, 0.01} (all four noise knobs = p), plus unrotated surface
   codes, rotated memories with rounds != d, repetition codes and XYZ color codes, so the fit
   depends on circuit features, not on names. Each task first runs a short pilot, then enough
   shots for ``--target-seconds`` (default 1.5 s). pymatching on all ~45 circuits,
   pymatching-correlated on 15, and each optional decoder that is importable (fusion_blossom,
   hypergraph_union_find, mw_parity_factor, tesseract) on 4-6 small circuits. (chromobius is not
   measured: it needs color-code detectors with a 4th coordinate, which stim's generated color
   codes lack; it gets pymatching's figures.)
2. The errors of those runs, for the logical-error-rate prior.
3. Per-task fixed overhead: wall time of ``sinter.collect`` with ``max_shots=1`` on a task given
   without DEM (as ``sinter collect`` gives it), minus the same for a tiny circuit (min of 2).
4. Process start-up: wall time of ``sinter collect --processes 1 --max_shots 1`` on a tiny circuit
   (min of 5; also with ``--processes 2``), and of ``python -c pass`` for comparison.

Other processes on the machine inflate timings. Each sinter run is pinned to the CPU that a
short busy-loop probe finds quietest, and a run whose worker got less than 80% of a CPU
(``getrusage(RUSAGE_CHILDREN)``) is repeated (up to 3 times, within a 60 s retry budget) keeping
the fastest; the fit is a robust (soft-L1) least squares.

How it fits (printed, and stored under ``"fit_report"``):

* pymatching seconds/shot: ``s = exp(log_a)*M + exp(log_b) * lam**c * (E/N)**e * N**f`` (least
  squares on log s; ``lam`` = mean DEM probability * DEM errors, ``E`` DEM errors, ``N``
  detectors, ``M`` measurements; runs that never got 70% of a CPU are left out). Median/max
  relative errors in sample and leave-one-out.
* other decoders: ``s_dec / s_pymatching_model = exp(log_k) * lam**g``.
* overhead: ``o0 + o1 * E`` per decoder.
* logical error rate prior: binomial likelihood of the pymatching counts (zero-error runs count
  too; each run weighs at most 200 errors' worth) under
  ``x = exp(c0 + k*(log p + c1 + c2*log(E/N)) + c3*log N)``, ``k = (d_g + 1)/2``, saturated at
  ``1 - 2**-K``; per-decoder factors from the other decoders' counts.

Decoders that are not importable now keep the entries of the existing JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import sinter
import stim
from scipy.optimize import least_squares, minimize

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from cores import cpu_now  # noqa: E402

from qec_kiln._planning._cost import CircuitFeatures  # noqa: E402
from qec_kiln._sweep.discover import dem_for_circuit  # noqa: E402

DEFAULT_OUT = REPO / "src" / "qec_kiln" / "data" / "cost_model.json"
PS = (0.001, 0.003, 0.005, 0.008, 0.01)


def spec(family: str, d: int, p: float, rounds: int | None = None, *, pl_fit: bool = True) -> dict:
    rounds = d if rounds is None else rounds
    short = family.split(":")[-1]
    return {
        "name": f"{short} d={d} r={rounds} p={p}",
        "family": family,
        "d": d,
        "rounds": rounds,
        "p": p,
        "pl_fit": pl_fit,
    }


def make_circuit(s: dict) -> stim.Circuit:
    p = s["p"]
    return stim.Circuit.generated(
        s["family"],
        distance=s["d"],
        rounds=s["rounds"],
        after_clifford_depolarization=p,
        after_reset_flip_probability=p,
        before_measure_flip_probability=p,
        before_round_data_depolarization=p,
    )


ROT = "surface_code:rotated_memory_x"
UNROT = "surface_code:unrotated_memory_z"
REP = "repetition_code:memory"
COLOR = "color_code:memory_xyz"


def pymatching_specs(quick: bool) -> list[dict]:
    ds = (3, 7, 11) if quick else (3, 5, 7, 9, 11, 13)
    ps = (0.001, 0.005, 0.01) if quick else PS
    out = [spec(ROT, d, p) for d in ds for p in ps]
    out += [
        spec(UNROT, 3, 0.002),
        spec(UNROT, 5, 0.006),
        spec(UNROT, 7, 0.003),
        spec("surface_code:rotated_memory_z", 9, 0.004, 3),
        spec(ROT, 5, 0.004, 25),
        spec(REP, 5, 0.01),
        spec(REP, 9, 0.03),
        spec(REP, 11, 0.003),
        spec(REP, 15, 0.05),
        spec(REP, 25, 0.02),
        spec(REP, 51, 0.01),
        # pymatching decodes the color code's undecomposed DEM badly: timing data only.
        spec(COLOR, 3, 0.003, pl_fit=False),
        spec(COLOR, 5, 0.005, pl_fit=False),
        spec(COLOR, 7, 0.002, pl_fit=False),
    ]
    if quick:
        out = out[: len(ds) * len(ps)] + out[len(ds) * len(ps) :: 3]
    return out


def decoder_specs(decoder: str, quick: bool) -> list[dict]:
    small = [spec(ROT, d, p) for d in (3, 5, 7) for p in (0.001, 0.005)]
    if decoder == "pymatching":
        return pymatching_specs(quick)
    if decoder == "pymatching-correlated":
        out = [spec(ROT, d, p) for d in (3, 7, 11, 13) for p in (0.001, 0.005, 0.01)]
        # (not color codes: correlated matching refuses undecomposed hyperedges)
        out += [spec(UNROT, 5, 0.006), spec(REP, 25, 0.02), spec(REP, 9, 0.03)]
        return out[::3] if quick else out
    if decoder in ("mw_parity_factor", "tesseract"):
        return [spec(ROT, d, p) for d in (3, 5) for p in (0.001, 0.005)]
    return small


def overhead_specs(decoder: str) -> list[dict]:
    # p only changes the one shot that is included; keep it small so slow decoders' shot is cheap.
    if decoder in ("mw_parity_factor", "tesseract", "fusion_blossom", "hypergraph_union_find"):
        return [spec(ROT, d, 0.001) for d in (5, 9, 13)]
    return [spec(ROT, d, 0.001) for d in (5, 9, 13, 17)]


# Rough guesses, only to size the pilot runs.
GUESS_FACTOR = {
    "pymatching": 1,
    "pymatching-correlated": 3,
    "fusion_blossom": 30,
    "hypergraph_union_find": 100,
    "mw_parity_factor": 1000,
    "tesseract": 300,
}


def guess_sps(f: CircuitFeatures, decoder: str) -> float:
    lam = f.expected_errors_per_shot
    return (3e-9 * f.num_measurements + 4e-7 * lam**1.3) * GUESS_FACTOR.get(decoder, 10)


def optional_decoders() -> dict[str, dict[str, Any]]:
    """name -> custom_decoders dict ({} for built-ins), for decoders importable here."""
    out: dict[str, dict[str, Any]] = {"pymatching": {}, "pymatching-correlated": {}}
    for module, name in [
        ("fusion_blossom", "fusion_blossom"),
        ("mwpf", "hypergraph_union_find"),
        ("mwpf", "mw_parity_factor"),
    ]:
        try:
            __import__(module)
            out[name] = {}
        except ImportError:
            pass
    try:
        import tesseract_decoder

        out["tesseract"] = {"tesseract": tesseract_decoder.make_tesseract_sinter_decoders_dict()["tesseract"]}
    except (ImportError, KeyError):
        pass
    return out


def cpu_slowdown(cpu: int, seconds: float = 0.1) -> float:
    """Wall / CPU time of a busy loop pinned to ``cpu``: ~1.0 when nothing else runs there."""
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        while time.perf_counter() - wall0 < seconds:
            pass
        return (time.perf_counter() - wall0) / max(time.thread_time() - cpu0, 1e-6)
    finally:
        os.sched_setaffinity(0, old)


LOAD_LOG: list[dict] = []


def quietest_cpu() -> int:
    """The CPU with the least other load right now (sinter pins its worker there)."""
    probes = {c: cpu_slowdown(c) for c in sorted(os.sched_getaffinity(0))}
    best = min(probes, key=probes.__getitem__)
    LOAD_LOG.append({"t": round(time.monotonic(), 1), "slowdown": round(probes[best], 3)})
    if probes[best] > 1.2:
        print(f"  WARNING: machine busy (best cpu slowdown {probes[best]:.2f}); timings inflated", flush=True)
    return best


def _collect(tasks: list[sinter.Task], custom: dict[str, Any]) -> dict[str, sinter.TaskStats]:
    stats = sinter.collect(
        num_workers=1,
        tasks=tasks,
        custom_decoders=custom or None,
        allowed_cpu_affinity_ids=[quietest_cpu()],
    )
    return {s.json_metadata["name"]: s for s in stats}


def measure_seconds_per_shot(
    decoder: str, specs: list[dict], custom: dict[str, Any], target: float
) -> list[dict]:
    rows, tasks = [], []
    for s in specs:
        c = make_circuit(s)
        dem = dem_for_circuit(c)
        f = CircuitFeatures.of(c, dem)
        rows.append({**s, "decoder": decoder, "features": f.to_json()})
        tasks.append((c, dem, f, s))

    def task(c: stim.Circuit, dem: stim.DetectorErrorModel, s: dict, shots: int) -> sinter.Task:
        return sinter.Task(
            circuit=c,
            decoder=decoder,
            detector_error_model=dem,
            json_metadata={"name": s["name"]},
            collection_options=sinter.CollectionOptions(max_shots=shots, max_errors=10**12),
        )

    t0 = time.monotonic()
    pilot = _collect(
        [task(c, dem, s, int(min(5000, max(20, 0.2 / guess_sps(f, decoder))))) for c, dem, f, s in tasks],
        custom,
    )
    t1 = time.monotonic()
    for row, (c, dem, _, s) in zip(rows, tasks, strict=True):
        p = pilot[s["name"]]
        shots = int(min(3e7, max(200, target * p.shots / max(p.seconds, 1e-9))))
        best, tot_shots, tot_errors, fractions = math.inf, 0, 0, []
        for _attempt in range(MAX_ATTEMPTS):
            st, cpu_fraction = _collect_one(task(c, dem, s, shots), custom)
            tot_shots += st.shots
            tot_errors += st.errors
            best = min(best, st.seconds / st.shots)
            fractions.append(round(cpu_fraction, 3))
            if cpu_fraction >= CLEAN_CPU_FRACTION or RETRY_BUDGET["seconds"] <= 0:
                break
            RETRY_BUDGET["seconds"] -= target + 0.5
        row.update(
            shots=tot_shots,
            errors=tot_errors,
            seconds_per_shot=best,
            worker_cpu_fractions=fractions,
        )
        print(
            f"  {decoder:22s} {row['name']:32s} {best * 1e6:10.3f} us/shot"
            f"  shots={tot_shots:9d} errors={tot_errors:7d}  worker cpu/wall {fractions}",
            flush=True,
        )
    t2 = time.monotonic()
    print(f"  [{decoder}: pilot {t1 - t0:.1f} s, main {t2 - t1:.1f} s]", flush=True)
    return rows


#: A run whose worker got less CPU than this fraction of the wall time was slowed by other
#: processes: it is repeated (up to MAX_ATTEMPTS, within RETRY_BUDGET) and the fastest kept.
CLEAN_CPU_FRACTION = 0.8
MAX_ATTEMPTS = 3
RETRY_BUDGET = {"seconds": 60.0}


def _collect_one(t: sinter.Task, custom: dict[str, Any]) -> tuple[sinter.TaskStats, float]:
    """Run one task; also return the worker's CPU seconds / the run's wall seconds."""
    c0 = cpu_now()
    start = time.perf_counter()
    (st,) = _collect([t], custom).values()
    wall = time.perf_counter() - start
    cpu = cpu_now() - c0
    return st, cpu / wall


def _wall_one_shot(c: stim.Circuit, decoder: str, custom: dict[str, Any]) -> float:
    """Wall seconds of a one-shot sinter run of ``c`` (given without DEM, as the CLI does).

    Repeated (within the retry budget) while the worker got too little CPU."""
    best = math.inf
    for _attempt in range(MAX_ATTEMPTS):
        cpu = quietest_cpu()
        c0 = cpu_now()
        t = time.perf_counter()
        sinter.collect(
            num_workers=1,
            tasks=[sinter.Task(circuit=c, decoder=decoder)],
            max_shots=1,
            custom_decoders=custom or None,
            allowed_cpu_affinity_ids=[cpu],
        )
        wall = time.perf_counter() - t
        used = cpu_now() - c0
        best = min(best, wall)
        # The parent waits for the worker's start-up: an idle run still shows ~0.7-0.9 here.
        if used / wall >= 0.6 or RETRY_BUDGET["seconds"] <= 0:
            break
        RETRY_BUDGET["seconds"] -= wall
    return best


def measure_overhead(decoder: str, custom: dict[str, Any]) -> list[dict]:
    tiny = make_circuit(spec(ROT, 3, 0.001))
    base = min(_wall_one_shot(tiny, decoder, custom) for _ in range(4))
    rows = []
    for s in overhead_specs(decoder):
        c = make_circuit(s)
        f = CircuitFeatures.of(c)
        wall = min(_wall_one_shot(c, decoder, custom) for _ in range(3))
        rows.append(
            {
                "name": s["name"],
                "decoder": decoder,
                "features": f.to_json(),
                "seconds": max(0.0, wall - base),
                "baseline_wall": base,
            }
        )
        print(
            f"  overhead {decoder:22s} {s['name']:32s} {wall - base:7.3f} s (baseline run {base:.3f} s)",
            flush=True,
        )
    return rows


def measure_startup() -> dict[str, Any]:
    """``sinter collect`` on a one-shot tiny circuit, whole process, 1 and 2 worker processes."""
    exe = pathlib.Path(sys.executable).parent / "sinter"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sinter"]
    walls: dict[int, list[float]] = {1: [], 2: []}
    py = []
    with tempfile.TemporaryDirectory() as tmp:
        circuit = pathlib.Path(tmp) / "tiny.stim"
        make_circuit(spec(REP, 3, 0.01)).to_file(circuit)
        for i in range(5):
            for procs in (1, 2):
                out = pathlib.Path(tmp) / f"out{i}_{procs}.csv"
                args = ["collect", "--circuits", str(circuit), "--decoders", "pymatching"]
                args += ["--max_shots", "1", "--processes", str(procs), "--quiet"]
                args += ["--save_resume_filepath", str(out)]
                if procs == 1:
                    args += ["--allowed_cpu_affinity_ids", str(quietest_cpu())]
                t = time.perf_counter()
                subprocess.run(cmd + args, check=True, capture_output=True)
                walls[procs].append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            py.append(time.perf_counter() - t)
    # min: the figure of an otherwise idle machine (other load only ever adds to it).
    res = {
        "sinter_collect_tiny": min(walls[1]),
        "sinter_collect_tiny_median": statistics.median(walls[1]),
        "sinter_collect_tiny_2_processes": min(walls[2]),
        "python": min(py),
        "sinter_collect_runs": walls[1],
        "sinter_collect_runs_2_processes": walls[2],
    }
    print(
        f"  startup: sinter collect (tiny, 1 shot, 1 process) min {res['sinter_collect_tiny']:.3f} s"
        f" of {[round(w, 3) for w in walls[1]]}; 2 processes min "
        f"{res['sinter_collect_tiny_2_processes']:.3f} s; python -c pass {res['python']:.3f} s",
        flush=True,
    )
    return res


def measure_graphlike_timing() -> dict[str, float]:
    out = {}
    for d in (13, 17):
        dem = dem_for_circuit(make_circuit(spec(ROT, d, 0.005)))
        t = time.perf_counter()
        dem.shortest_graphlike_error()
        out[f"d={d} ({dem.num_errors} dem errors)"] = time.perf_counter() - t
    print(f"  shortest_graphlike_error: {out}", flush=True)
    return out


# ----------------------------------------------------------------------------- fitting


def _arrays(rows: list[dict]) -> dict[str, np.ndarray]:
    f = [r["features"] for r in rows]
    n = np.array([max(x["num_detectors"], 1) for x in f], float)
    e = np.array([max(x["num_dem_errors"], 1) for x in f], float)
    return {
        "N": n,
        "E": e,
        "M": np.array([x["num_measurements"] for x in f], float),
        "lam": np.array([x["mean_error_probability"] * x["num_dem_errors"] for x in f]),
        "pbar": np.array([x["mean_error_probability"] for x in f]),
        "K": np.array([x["num_observables"] for x in f], float),
        "dg": np.array([x["graphlike_distance"] or round(x["num_detectors"] ** (1 / 3)) for x in f], float),
    }


def sps_model(th: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
    return np.exp(th[0]) * a["M"] + np.exp(
        th[1] + th[2] * np.log(a["lam"]) + th[3] * np.log(a["E"] / a["N"]) + th[4] * np.log(a["N"])
    )


def fit_sps(rows: list[dict]) -> np.ndarray:
    a = _arrays(rows)
    y = np.log([r["seconds_per_shot"] for r in rows])
    r = least_squares(
        lambda th: np.log(sps_model(th, a)) - y,
        [math.log(3e-9), math.log(4e-7), 1.3, 0.5, 0.0],
        loss="soft_l1",  # a run slowed by a busy machine should not drag the fit
        f_scale=0.15,
    )
    return r.x


def rel_errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = np.abs(pred / meas - 1)
    return {"median": float(np.median(rel)), "max": float(rel.max()), "n": int(len(rel))}


def _clean(row: dict) -> bool:
    """False for a timing whose every attempt ran with < 70% of a CPU (busy machine)."""
    return max(row.get("worker_cpu_fractions") or [1.0]) >= 0.7


def fit_pymatching(rows: list[dict]) -> tuple[dict, dict]:
    th = fit_sps(rows)
    meas = np.array([r["seconds_per_shot"] for r in rows])
    pred = sps_model(th, _arrays(rows))
    loo = np.array(
        [sps_model(fit_sps(rows[:i] + rows[i + 1 :]), _arrays([rows[i]]))[0] for i in range(len(rows))]
    )
    rot = np.array([r["family"] == ROT and r["rounds"] == r["d"] for r in rows])
    report = {
        "in_sample_all": rel_errors(pred, meas),
        "in_sample_rotated_memory": rel_errors(pred[rot], meas[rot]),
        "in_sample_other_families": rel_errors(pred[~rot], meas[~rot]),
        "leave_one_out_all": rel_errors(loo, meas),
        "leave_one_out_other_families": rel_errors(loo[~rot], meas[~rot]),
        "per_circuit_pred_over_meas": {
            r["name"]: round(float(q), 3) for r, q in zip(rows, pred / meas, strict=True)
        },
    }
    coef = dict(zip(["log_a", "log_b", "c", "e", "f"], map(float, th), strict=True))
    return coef, report


def fit_factor(rows: list[dict], pm_coef: dict) -> tuple[dict, dict]:
    th = np.array([pm_coef[k] for k in ["log_a", "log_b", "c", "e", "f"]])
    a = _arrays(rows)
    meas = np.array([r["seconds_per_shot"] for r in rows])
    ratio = meas / sps_model(th, a)
    x = np.log(np.maximum(a["lam"], 1e-12))
    if len(rows) >= 4 and np.ptp(x) > 1:
        g, log_k = np.polyfit(x, np.log(ratio), 1)
    else:
        g, log_k = 0.0, float(np.mean(np.log(ratio)))
    pred = sps_model(th, a) * np.exp(log_k + g * x)
    return (
        {"log_k": float(log_k), "g": float(g)},
        {
            **rel_errors(pred, meas),
            "ratio_to_pymatching_model": {
                "min": float(ratio.min()),
                "median": float(np.median(ratio)),
                "max": float(ratio.max()),
            },
        },
    )


def fit_overhead(rows: list[dict]) -> dict:
    e = np.array([r["features"]["num_dem_errors"] for r in rows], float)
    y = np.array([r["seconds"] for r in rows])
    o1, o0 = np.polyfit(e, y, 1)
    if o0 < 0:  # through the origin
        o0, o1 = 0.0, float((e @ y) / (e @ e))
    return {"o0": float(o0), "o1": float(max(o1, 0.0))}


def pl_model(th: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
    k = (a["dg"] + 1) / 2
    log_x = th[0] + k * (np.log(a["pbar"]) + th[1] + th[2] * np.log(a["E"] / a["N"])) + th[3] * np.log(a["N"])
    sat = 1 - 2.0 ** -np.minimum(a["K"], 60)
    return sat * -np.expm1(-np.exp(np.minimum(log_x, 50)) / sat)


#: In the p_L fit a run counts as at most this many errors' worth (errors and shots scaled down
#: together), so the small, noisy circuits with 10^4-10^5 errors do not outweigh the large ones.
PL_ERROR_CAP = 200


def fit_pl(rows: list[dict]) -> tuple[dict, dict]:
    a = _arrays(rows)
    e = np.array([r["errors"] for r in rows], float)
    n = np.array([r["shots"] for r in rows], float)
    w = np.minimum(1.0, PL_ERROR_CAP / np.maximum(e, 1.0))
    e, n = e * w, n * w

    def nll(th: np.ndarray) -> float:
        p = np.clip(pl_model(th, a), 1e-300, 1 - 1e-12)
        return float(-(e * np.log(p) + (n - e) * np.log1p(-p)).sum())

    best = None
    for x0 in ([-3, 1, 1.5, 0.4], [-5, 5, 0, 0], [0, 0, 1, 0]):
        r = minimize(nll, x0, method="Nelder-Mead", options={"maxiter": 40000, "xatol": 1e-7, "fatol": 1e-7})
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None
    coef = dict(zip(["c0", "c1", "c2", "c3"], map(float, best.x), strict=True))
    return coef, pl_report(rows, coef)


def pl_report(rows: list[dict], coef: dict, factor: float = 1.0) -> dict:
    th = np.array([coef[k] for k in ["c0", "c1", "c2", "c3"]])
    pred = pl_model(th, _arrays(rows)) * factor
    seen = [(r, q) for r, q in zip(rows, pred, strict=True) if r["errors"] >= 10]
    ratios = [q / (r["errors"] / r["shots"]) for r, q in seen]
    fold = [max(x, 1 / x) for x in ratios]
    zero = [
        (r["name"], round(float(q * r["shots"]), 2))
        for r, q in zip(rows, pred, strict=True)
        if r["errors"] == 0
    ]
    return {
        "points_with_10_errors": len(seen),
        "median_fold_error": float(np.median(fold)) if fold else None,
        "max_fold_error": float(np.max(fold)) if fold else None,
        "per_circuit_pred_over_meas": {
            r["name"]: round(float(x), 3) for (r, _), x in zip(seen, ratios, strict=True)
        },
        "zero_error_runs_predicted_errors": dict(zero),
    }


def fit_all(measurements: dict, old: dict | None) -> dict:
    sps_rows = measurements["seconds_per_shot"]
    by_dec: dict[str, list[dict]] = {}
    for r in sps_rows:
        by_dec.setdefault(r["decoder"], []).append(r)
    clean = [r for r in by_dec["pymatching"] if _clean(r)]
    pm_coef, pm_report = fit_pymatching(clean)
    pm_report["excluded_busy_machine"] = [r["name"] for r in by_dec["pymatching"] if not _clean(r)]
    factors, factor_reports = {}, {}
    for dec, rows in by_dec.items():
        if dec != "pymatching":
            factors[dec], factor_reports[dec] = fit_factor([r for r in rows if _clean(r)] or rows, pm_coef)
    overhead = {}
    ov_rows: dict[str, list[dict]] = {}
    for r in measurements["overhead"]:
        ov_rows.setdefault(r["decoder"], []).append(r)
    for dec, rows in ov_rows.items():
        overhead[dec] = fit_overhead(rows)

    pl_rows = [r for r in by_dec["pymatching"] if r["pl_fit"]]
    pl_coef, pl_rep = fit_pl(pl_rows)
    pl_out = pl_report([r for r in by_dec["pymatching"] if not r["pl_fit"]], pl_coef)
    pl_factors, pl_factor_reports = {}, {}
    th = np.array([pl_coef[k] for k in ["c0", "c1", "c2", "c3"]])
    for dec, rows in by_dec.items():
        if dec == "pymatching":
            continue
        seen = [r for r in rows if r["errors"] >= 10]
        if len(seen) >= 3:
            prior = pl_model(th, _arrays(seen))
            meas = np.array([r["errors"] / r["shots"] for r in seen])
            pl_factors[dec] = float(np.exp(np.median(np.log(meas / prior))))
            pl_factor_reports[dec] = pl_report(rows, pl_coef, pl_factors[dec])

    if old:  # keep what was fitted before for decoders not importable now
        for dec, v in old.get("seconds_per_shot", {}).get("decoder_factors", {}).items():
            factors.setdefault(dec, v)
        for dec, v in old.get("task_overhead", {}).items():
            overhead.setdefault(dec, v)
        for dec, v in old.get("logical_error_rate", {}).get("decoder_factors", {}).items():
            pl_factors.setdefault(dec, v)

    startup = measurements["startup"]
    return {
        "seconds_per_shot": {
            "form": "s = exp(log_a)*M + exp(log_b) * lam**c * (E/N)**e * N**f;"
            " s_decoder = s * exp(log_k) * lam**g",
            "pymatching": pm_coef,
            "decoder_factors": factors,
        },
        "task_overhead": overhead,
        "process_startup_seconds": round(startup["sinter_collect_tiny"], 3),
        "python_startup_seconds": round(startup["python"], 4),
        "logical_error_rate": {
            "form": "x = exp(c0 + k*(log p + c1 + c2*log(E/N)) + c3*log N), k=(d_g+1)/2;"
            " p_L = s*(1-exp(-x/s)) * factor, s = 1-2**-K",
            "coefficients": pl_coef,
            "decoder_factors": pl_factors,
        },
        "fit_report": {
            "seconds_per_shot_pymatching": pm_report,
            "seconds_per_shot_decoder_factors": factor_reports,
            "logical_error_rate_prior": pl_rep,
            "logical_error_rate_prior_out_of_sample_color_codes": pl_out,
            "logical_error_rate_decoder_factors": pl_factor_reports,
            "graphlike_distance_seconds": measurements.get("graphlike_timing"),
        },
    }


def print_summary(model: dict) -> None:
    rep = model["fit_report"]
    pm = rep["seconds_per_shot_pymatching"]
    print("\n== seconds/shot, pymatching:", json.dumps(model["seconds_per_shot"]["pymatching"]))
    for k in [
        "in_sample_all",
        "in_sample_rotated_memory",
        "in_sample_other_families",
        "leave_one_out_all",
        "leave_one_out_other_families",
    ]:
        print(f"   {k:32s} median {pm[k]['median']:.3f}  max {pm[k]['max']:.3f}  (n={pm[k]['n']})")
    for dec, r in rep["seconds_per_shot_decoder_factors"].items():
        print(
            f"== {dec}: factor {model['seconds_per_shot']['decoder_factors'][dec]}; "
            f"median {r['median']:.3f} max {r['max']:.3f} (n={r['n']}); "
            f"ratio to pymatching model {r['ratio_to_pymatching_model']}"
        )
    print("== overhead:", json.dumps(model["task_overhead"]))
    print(
        f"== process startup {model['process_startup_seconds']} s "
        f"(python alone {model['python_startup_seconds']} s)"
    )
    pl = rep["logical_error_rate_prior"]
    print(
        "== p_L prior:",
        json.dumps(model["logical_error_rate"]["coefficients"]),
        f"median fold {pl['median_fold_error']:.2f}, max fold {pl['max_fold_error']:.2f} "
        f"over {pl['points_with_10_errors']} runs with >= 10 errors",
    )
    print("   decoder factors:", model["logical_error_rate"]["decoder_factors"])
    print(
        "   color codes (not fitted):",
        rep["logical_error_rate_prior_out_of_sample_color_codes"]["per_circuit_pred_over_meas"],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help=f"JSON to write (default {DEFAULT_OUT.relative_to(REPO)})",
    )
    ap.add_argument(
        "--refit",
        action="store_true",
        help="refit the measurements stored in the existing JSON; measure nothing",
    )
    ap.add_argument("--quick", action="store_true", help="fewer circuits (smoke test)")
    ap.add_argument(
        "--target-seconds", type=float, default=1.5, help="sampling time per measured task (default 1.5)"
    )
    ap.add_argument(
        "--decoders",
        nargs="*",
        default=None,
        help="decoders to measure (default: pymatching, pymatching-correlated and the "
        "optional ones that import)",
    )
    args = ap.parse_args()
    out = args.out or DEFAULT_OUT
    if args.quick and args.out is None:
        ap.error("--quick needs --out (don't overwrite the shipped model with a smoke test)")
    old = json.loads(DEFAULT_OUT.read_text()) if DEFAULT_OUT.exists() else None

    t_start = time.monotonic()
    if args.refit:
        if old is None:
            ap.error(f"--refit needs {DEFAULT_OUT}")
        measurements = old["measurements"]
    else:
        available = optional_decoders()
        decoders = args.decoders or list(available)
        missing = [d for d in decoders if d not in available]
        if missing:
            ap.error(f"not importable here: {missing}")
        if "pymatching" not in decoders:
            ap.error("pymatching must be measured: the other decoders are fitted relative to it")
        print(f"measuring on {platform.node()} ({os.cpu_count()} cpus), decoders {decoders}", flush=True)
        measurements: dict[str, Any] = {"seconds_per_shot": [], "overhead": []}
        measurements["graphlike_timing"] = measure_graphlike_timing()
        measurements["startup"] = measure_startup()
        for dec in decoders:
            custom = available[dec]
            try:
                # The slow optional decoders get shorter runs: rough factors are all they need.
                target = args.target_seconds if dec in ("pymatching", "pymatching-correlated") else 1.0
                sps_rows = measure_seconds_per_shot(dec, decoder_specs(dec, args.quick), custom, target)
                ov_rows = measure_overhead(dec, custom)
            except Exception as ex:  # one broken optional decoder must not waste the run
                if dec == "pymatching":
                    raise
                print(f"  SKIPPED {dec}: {type(ex).__name__}: {str(ex)[-300:]}", flush=True)
                continue
            measurements["seconds_per_shot"] += sps_rows
            measurements["overhead"] += ov_rows
        if old and not args.quick:  # keep rows of decoders not measured now
            measured = set(decoders)
            for key in ("seconds_per_shot", "overhead"):
                kept = old.get("measurements", {}).get(key, [])
                measurements[key] += [r for r in kept if r["decoder"] not in measured]
        measurements["cpu_slowdown_probes"] = LOAD_LOG
        measurements["machine"] = {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        }
    model = fit_all(measurements, old)
    runtime = time.monotonic() - t_start
    versions = {"stim": stim.__version__, "sinter": sinter.__version__, "python": platform.python_version()}
    try:
        import pymatching

        versions["pymatching"] = pymatching.__version__
    except ImportError:
        pass
    doc = {
        "schema": 1,
        "generated_by": "bench/fit_cost_model.py" + (" --refit" if args.refit else ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "fit_runtime_seconds": round(runtime, 1)
        if not args.refit
        else (old or {}).get("fit_runtime_seconds"),
        **model,
        "measurements": measurements,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    shutil.move(tmp, out)
    print_summary(model)
    if LOAD_LOG:
        worst = max(x["slowdown"] for x in LOAD_LOG)
        print(f"worst CPU slowdown probe while measuring: {worst:.2f} (1.0 = idle)")
    print(f"\nwrote {out} in {runtime:.1f} s")


if __name__ == "__main__":
    main()

"""Tests of qec_kiln._planning._cost: circuit features, fitted predictions, pilot calibration and its cache.

Fast (well under 20 s): the few sinter runs are sub-second to a few seconds each.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import textwrap
import time

import pytest
import sinter
import stim

from qec_kiln._planning import _cost
from qec_kiln._planning._cost import (
    PROCESS_STARTUP_SECONDS,
    Calibration,
    CalibrationCache,
    CircuitFeatures,
    calibrate,
    predict_logical_error_rate,
    predict_seconds_per_shot,
    predict_task_overhead_seconds,
    predict_task_seconds,
    shots_needed,
    strong_id_of,
)


def rotated(d: int, p: float, rounds: int | None = None) -> stim.Circuit:
    return stim.Circuit.generated(
        "surface_code:rotated_memory_x",
        distance=d,
        rounds=d if rounds is None else rounds,
        after_clifford_depolarization=p,
        after_reset_flip_probability=p,
        before_measure_flip_probability=p,
        before_round_data_depolarization=p,
    )


@functools.cache  # CircuitFeatures is frozen; d=13 takes ~0.15 s to generate and measure
def features(d: int, p: float) -> CircuitFeatures:
    return CircuitFeatures.of(rotated(d, p))


def test_features_match_stim_counts():
    c = rotated(5, 0.005)
    dem = c.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    f = CircuitFeatures.of(c, dem)
    probs = [i.args_copy()[0] for i in dem.flattened() if i.type == "error"]
    assert f.num_qubits == c.num_qubits
    assert f.num_detectors == c.num_detectors == dem.num_detectors
    assert f.num_observables == c.num_observables == 1
    assert f.num_measurements == c.num_measurements
    assert f.num_dem_errors == len(probs) == dem.num_errors
    assert f.mean_error_probability == pytest.approx(sum(probs) / len(probs), rel=1e-9)
    assert f.graphlike_distance == len(dem.shortest_graphlike_error()) == 5
    # The default DEM is the one sinter builds; JSON round trip is exact.
    assert CircuitFeatures.of(c) == f
    assert CircuitFeatures.from_json(json.loads(json.dumps(f.to_json()))) == f


def test_features_of_noiseless_circuit():
    c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2)
    f = CircuitFeatures.of(c)
    assert f.num_dem_errors == 0 and f.mean_error_probability == 0.0
    assert f.graphlike_distance is None
    assert predict_seconds_per_shot(f, "pymatching") > 0
    assert predict_logical_error_rate(f) == 0.0


def test_seconds_per_shot_positive_and_monotone():
    for decoder in ("pymatching", "pymatching-correlated", "some-unknown-decoder"):
        by_d = [predict_seconds_per_shot(features(d, 0.005), decoder) for d in (3, 5, 7, 9, 11, 13)]
        assert all(s > 0 for s in by_d)
        assert by_d == sorted(by_d) and len(set(by_d)) == len(by_d), by_d
        by_p = [predict_seconds_per_shot(features(7, p), decoder) for p in (0.001, 0.003, 0.005, 0.01)]
        assert by_p == sorted(by_p) and len(set(by_p)) == len(by_p), by_p
    f = features(9, 0.005)
    pm = predict_seconds_per_shot(f, "pymatching")
    assert predict_seconds_per_shot(f, "some-unknown-decoder") == pm  # falls back to pymatching
    assert predict_seconds_per_shot(f, "pymatching-correlated") > pm


def test_notes_figures_roughly_reproduced():
    # Measured on the reference 2-core machine (shared/NOTES.md): d=13 p=.001 14 us, p=.01 221 us.
    assert predict_seconds_per_shot(features(13, 0.001), "pymatching") == pytest.approx(14e-6, rel=0.5)
    assert predict_seconds_per_shot(features(13, 0.01), "pymatching") == pytest.approx(221e-6, rel=0.5)


@pytest.mark.slow
def test_prediction_within_factor_two_of_a_real_run():
    """The model against the CPU time of what sinter's worker does per shot (stim samples
    bit-packed detection events, pymatching decodes them in batches): CPU time, not wall time,
    so other processes on a loaded machine do not move the measurement."""
    import pymatching

    c = rotated(7, 0.005)
    predicted = predict_seconds_per_shot(CircuitFeatures.of(c), "pymatching")
    sampler = c.compile_detector_sampler()
    matcher = pymatching.Matching.from_detector_error_model(
        c.detector_error_model(decompose_errors=True))
    cpu0 = time.thread_time()
    for _ in range(4):
        dets, _obs = sampler.sample(10_000, separate_observables=True, bit_packed=True)
        matcher.decode_batch(dets, bit_packed_shots=True, bit_packed_predictions=True)
    measured = (time.thread_time() - cpu0) / 40_000
    assert 0.5 < predicted / measured < 2.0, (predicted, measured)


def test_overhead_and_startup():
    small, big = features(3, 0.005), features(13, 0.005)
    for decoder in ("pymatching", "pymatching-correlated", "unknown"):
        a = predict_task_overhead_seconds(small, decoder)
        b = predict_task_overhead_seconds(big, decoder)
        assert 0 <= a < b < 5
    assert 0.05 < PROCESS_STARTUP_SECONDS < 10


def test_logical_error_rate_prior():
    # Below threshold: bigger distance -> smaller p_L; more noise -> bigger p_L.
    by_d = [predict_logical_error_rate(features(d, 0.003)) for d in (3, 5, 7, 9)]
    assert by_d == sorted(by_d, reverse=True)
    by_p = [predict_logical_error_rate(features(5, p)) for p in (0.001, 0.003, 0.01)]
    assert by_p == sorted(by_p)
    assert all(0 < x < 0.5 for x in by_d + by_p)
    # Reference rates measured with pymatching: d=5 p=.005 1.6e-2, d=9 p=.003 5.8e-4.
    assert predict_logical_error_rate(features(5, 0.005)) == pytest.approx(1.6e-2, rel=0.7)
    assert 1.5e-4 < predict_logical_error_rate(features(9, 0.003)) < 2.5e-3
    # Tiny p_L: the prior is small enough that shots_needed hits max_shots.
    assert shots_needed(10**6, 1000, predict_logical_error_rate(features(13, 0.001))) == 10**6


def test_shots_needed():
    assert shots_needed(10**6, 1000, 0.01) == 100_000
    assert shots_needed(10**6, 1000, 1e-5) == 10**6
    assert shots_needed(10**6, 1000, 0.0) == 10**6
    assert shots_needed(10**6, None, 0.3) == 10**6
    assert shots_needed(10**6, 0, 0.3) == 1
    assert shots_needed(0, 10, 0.3) == 1


def test_predict_task_seconds_uses_calibration():
    f = features(5, 0.005)
    cal = Calibration(seconds_per_shot=1e-3, shots=10_000, errors=100)
    slow = predict_task_seconds(f, "pymatching", max_shots=10**6, max_errors=1000, calibration=cal)
    overhead = predict_task_overhead_seconds(f, "pymatching")
    p_l = cal.p_logical_estimate(predict_logical_error_rate(f, "pymatching"))
    assert slow == pytest.approx(overhead + 1e-3 * 1000 / p_l, rel=1e-9)
    assert predict_task_seconds(f, "pymatching", max_shots=10**6, max_errors=1000) < slow


def test_p_logical_estimate():
    prior = 1e-3
    # No errors in a short pilot: stays near the prior; in a long one: drops well below, never 0.
    short = Calibration(1e-6, 100, 0).p_logical_estimate(prior)
    long = Calibration(1e-6, 10**6, 0).p_logical_estimate(prior)
    assert prior / 3 < short < prior * 3
    assert 0 < long < 3e-6
    # Many errors: the counts win.
    assert Calibration(1e-6, 10**5, 2000).p_logical_estimate(prior) == pytest.approx(0.02, rel=0.05)
    assert Calibration(1e-6, 10**5, 2000).p_logical_estimate(1e-9) == pytest.approx(0.02, rel=0.1)
    # No prior: Jeffreys.
    assert Calibration(1e-6, 999, 0).p_logical_estimate(0.0) == pytest.approx(0.5 / 1000)


def _tiny_tasks() -> list[sinter.Task]:
    out = []
    for d in (3, 5):
        c = stim.Circuit.generated(
            "repetition_code:memory", distance=d, rounds=d, after_clifford_depolarization=0.02
        )
        out.append(sinter.Task(circuit=c, decoder="pymatching", json_metadata={"d": d}))
    return out


@pytest.fixture(scope="module")
def worker_startup_seconds() -> float:
    """Seconds one ``sinter.iter_collect`` worker takes here, now, to start and give its first
    shot (spawn, imports, a task's DEM and decoder set-up): the unit of the wall-clock bounds
    below, measured in the same run, since on a loaded machine a start-up alone can take
    seconds (a fixed bound failed there while calibrate kept its budget)."""
    c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
                               after_clifford_depolarization=0.02)
    t0 = time.monotonic()
    for _ in sinter.iter_collect(num_workers=1, max_shots=1, tasks=[
            sinter.Task(circuit=c, decoder="pymatching")]):
        pass
    return time.monotonic() - t0


@pytest.mark.slow
def test_calibrate_and_warm_cache(tmp_path, monkeypatch, worker_startup_seconds):
    monkeypatch.setenv("QEC_KILN_CACHE_DIR", str(tmp_path / "cache"))
    cache = CalibrationCache()
    assert cache.path == tmp_path / "cache" / "calibration.json"
    tasks = _tiny_tasks()

    runs = []
    real_run = _cost._calibrate._run_sinter

    def counting_run(*args, **kwargs):
        runs.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(_cost._calibrate, "_run_sinter", counting_run)

    # Enough budget for both tasks' 1000 shots even when start-ups are slow here. The bound: the
    # budget plus a start-up and a report period that cannot be interrupted, with a start-up's
    # margin again (and never less than the 3 s that held on an idle machine).
    budget = 3.0 + 2 * worker_startup_seconds
    t0 = time.monotonic()
    cals = calibrate(tasks, seconds_budget=budget, min_shots=1000, cache=cache)
    wall = time.monotonic() - t0
    assert wall < budget + max(3.0, 2 * worker_startup_seconds + 1.5), (wall, worker_startup_seconds)
    assert set(cals) == {strong_id_of(t) for t in tasks}
    for cal in cals.values():
        assert cal.seconds_per_shot > 0
        assert cal.shots >= 1000
        assert 0 <= cal.errors <= cal.shots
    assert len(runs) >= 1

    # The cache file holds them; a fresh cache object re-reads the same values.
    assert {k: CalibrationCache().get(k) for k in cals} == cals

    # Warm cache: nothing is sampled, the same values come back at once.
    runs.clear()
    again = calibrate(tasks, seconds_budget=budget, cache=CalibrationCache())
    assert runs == []  # nothing sampled (no wall-clock bound: the machine may be loaded)
    assert again == cals


@pytest.mark.slow  # samples for its 2 s budget
def test_calibrate_bounds_wall_time_of_a_slow_task(worker_startup_seconds):
    # ~55 us/shot: 10**6 shots would be about a minute; the budget cuts it to ~2 s, plus what a
    # start-up (this task's DEM is larger than the reference's: three of them as margin) and a
    # report period take on this machine now, and never less than the 3 s that held idle.
    task = sinter.Task(circuit=rotated(9, 0.01), decoder="pymatching")
    t0 = time.monotonic()
    cals = calibrate([task], seconds_budget=2.0, min_shots=10**6)
    wall = time.monotonic() - t0
    assert wall < 2.0 + max(3.0, 3 * worker_startup_seconds + 1.5), (wall, worker_startup_seconds)
    (cal,) = cals.values()
    assert 0 < cal.shots < 10**6
    assert cal.seconds_per_shot > 0


def test_cache_ignores_unreadable_file(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{ not json")
    cache = CalibrationCache(path)
    assert cache.get("x") is None
    cache.put("x", Calibration(2e-6, 10, 1))
    assert CalibrationCache(path).get("x") == Calibration(2e-6, 10, 1)
    assert len(CalibrationCache(path)) == 1


def test_calibrate_from_a_script_without_main_guard(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(
        textwrap.dedent("""
        import stim, sinter
        from qec_kiln._planning._cost import calibrate
        print("top level ran", flush=True)
        c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
                                   after_clifford_depolarization=0.02)
        cals = calibrate([sinter.Task(circuit=c, decoder="pymatching")], seconds_budget=1.0)
        (cal,) = cals.values()
        print("ok", cal.shots > 0)
    """)
    )
    env = dict(os.environ, QEC_KILN_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["top level ran", "ok True"]  # the worker did not re-run it


def test_model_file_is_complete():
    model = _cost.load_model()
    assert model["schema"] == 1
    assert set(model["seconds_per_shot"]["pymatching"]) == {"log_a", "log_b", "c", "e", "f"}
    assert "pymatching" in model["task_overhead"]
    assert math.isfinite(model["process_startup_seconds"])


@pytest.mark.slow
def test_estimate_costs_checks_the_cache_once_and_predicts_like_predict_task_seconds(
        tmp_path, monkeypatch):
    from qec_kiln._sweep.discover import check_duplicates, discover_circuits

    monkeypatch.setenv("QEC_KILN_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "circuits"
    folder.mkdir()
    for d in (3, 5):
        stim.Circuit.generated("repetition_code:memory", distance=d, rounds=d,
                               after_clifford_depolarization=0.02).to_file(folder / f"d={d}.stim")
    circuits = discover_circuits(folder)
    ids = check_duplicates(circuits, ["pymatching"])
    warm = Calibration(seconds_per_shot=3e-5, shots=10_000, errors=700)
    CalibrationCache().put(ids[("d=3.stim", "pymatching")], warm)

    runs, lines = [], []
    real_run = _cost._calibrate._run_sinter

    def counting_run(pilots, **kwargs):
        runs.append([p.strong_id for p in pilots])
        return real_run(pilots, **kwargs)

    monkeypatch.setattr(_cost._calibrate, "_run_sinter", counting_run)
    costs, feats = _cost.estimate_costs(circuits, ["pymatching"], ids, calibrate=True,
                                        calibrate_seconds=2.0, log=lines.append)
    cold = ids[("d=5.stim", "pymatching")]
    assert lines == ["calibrating 1 task(s) for up to 2 s (1 cached)"]
    assert runs and all(r == [cold] for r in runs)  # the cached task is never sampled
    by_key = {c.circuit: c for c in costs}
    assert by_key["d=3.stim"].seconds_per_shot == warm.seconds_per_shot
    f3 = CircuitFeatures.from_json(feats["d=3.stim"])
    assert by_key["d=3.stim"].predicted_seconds(10**6, 100) == predict_task_seconds(
        f3, "pymatching", max_shots=10**6, max_errors=100, calibration=warm)

    # Warm for both now: nothing runs, nothing is logged; without --calibrate: the model alone.
    runs.clear()
    lines.clear()
    again, _ = _cost.estimate_costs(circuits, ["pymatching"], ids, calibrate=True, log=lines.append)
    assert runs == [] and lines == [] and again == costs
    model_only, _ = _cost.estimate_costs(circuits, ["pymatching"], ids)
    assert model_only[0].seconds_per_shot == predict_seconds_per_shot(f3, "pymatching")

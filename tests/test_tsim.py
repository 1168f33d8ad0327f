"""The tsim sampler (qec_kiln.tsim): Clifford+T circuits under the unmodified ``sinter collect``.

CPU only. The tests that sample need bloqade-tsim (and JAX); they are skipped, saying so, when it
is not installed (``pip install bloqade-tsim``, part of the ``test`` extra). Sampling tests pay a
JAX compilation of a few seconds per circuit, so they use few, small circuits.
"""

from __future__ import annotations

import importlib.metadata
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pymatching
import pytest
import sinter
import stim
from generate_tsim_circuits import main as generate
from generate_tsim_circuits import repetition_t_memory

from qec_kiln._errors import KilnError
from qec_kiln._sweep.discover import discover_circuits


def _tsim_missing() -> str | None:
    try:
        importlib.metadata.version("bloqade-tsim")  # the package named "tsim" is another one
        import jax  # noqa: F401
        import tsim  # noqa: F401
    except Exception as ex:  # PackageNotFoundError, ImportError, a broken JAX install
        return f"bloqade-tsim is not usable here ({ex!r}); pip install bloqade-tsim"
    return None


needs_tsim = pytest.mark.skipif(_tsim_missing() is not None, reason=str(_tsim_missing()))


def _sinter_cli() -> str:
    exe = pathlib.Path(sys.executable).with_name("sinter")
    found = str(exe) if exe.exists() else shutil.which("sinter")
    if not found:
        pytest.skip("the sinter command is not installed next to this Python")
    return found


def _stim_pymatching_rate(circuit: stim.Circuit, dem: stim.DetectorErrorModel, shots: int):
    """Logical error rate of plain stim (tags ignored) + pymatching: what sinter would report."""
    matching = pymatching.Matching.from_detector_error_model(dem)
    dets, obs = circuit.compile_detector_sampler(seed=7).sample(shots, separate_observables=True)
    return float(np.mean(np.any(matching.decode_batch(dets) != obs, axis=1)))


def _z(p1: float, n1: int, p2: float, n2: int) -> float:
    """How many standard errors apart two measured rates are."""
    return abs(p1 - p2) / math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)


def test_import_and_sinter_samplers_need_neither_tsim_nor_jax():
    # sinter's main process and `qec-kiln launch` only load the names.
    code = (
        "import sys\n"
        "sys.modules['tsim'] = None; sys.modules['jax'] = None\n"  # make both unimportable
        "import sinter, stim, qec_kiln.tsim as t\n"
        "s = t.sinter_samplers()\n"
        "assert list(s) == ['tsim'] and isinstance(s['tsim'], sinter.Sampler)\n"
        "c = stim.Circuit('X_ERROR(0.1) 0\\nM 0\\nDETECTOR rec[-1]\\nOBSERVABLE_INCLUDE(0) rec[-1]')\n"
        "task = sinter.Task(circuit=c, decoder='tsim', detector_error_model=c.detector_error_model())\n"
        "try:\n"
        "    s['tsim'].compiled_sampler_for_task(task)\n"
        "except t.TsimNotInstalledError as ex:\n"
        "    print('REFUSED', ex)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED" in proc.stdout and "pip install bloqade-tsim" in proc.stdout


def test_discovery_refuses_the_tagged_example_circuits_without_the_sampler(tmp_path):
    generate(["--out", str(tmp_path), "-d", "3", "-p", "0.02"])
    with pytest.raises(KilnError) as info:
        discover_circuits(tmp_path)
    message = str(info.value)
    assert "type=rep_t_memory" in message and "S[T]" in message and "tsim" in message
    assert "--custom-decoders-module-function qec_kiln.tsim:sinter_samplers" in message
    assert "--decoders tsim" in message

    found = discover_circuits(tmp_path, allow_tagged_gates=True)
    assert [c.metadata for c in found] == [
        {"d": 3, "p": 0.02, "type": "rep_s_memory"},
        {"d": 3, "p": 0.02, "type": "rep_t_memory"},
    ]
    (tmp_path / "d=3,p=0.02,type=rep_t_memory.stim").unlink()
    assert len(discover_circuits(tmp_path)) == 1  # the Clifford twin needs no tsim


def test_example_circuits_are_deterministic_and_differ_only_by_the_tags():
    for d in (2, 3, 5):
        tagged, clifford = repetition_t_memory(d, 0.01), repetition_t_memory(d, 0.01, tagged=False)
        assert tagged.replace("S[T]", "S").replace("S_DAG[T]", "S_DAG") == clifford
        circuit = stim.Circuit(tagged)
        # stim's DEM exists (deterministic detectors/observable with the tags ignored) ...
        circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
        assert circuit.num_detectors == d * (d - 1) + (d - 1) and circuit.num_observables == 1
        # ... and noiselessly nothing fires.
        quiet = stim.Circuit(repetition_t_memory(d, 0))
        dets, obs = quiet.compile_detector_sampler().sample(64, separate_observables=True)
        assert not dets.any() and not obs.any()
    with pytest.raises(ValueError):
        repetition_t_memory(1, 0.01)


@pytest.mark.slow
@needs_tsim
@pytest.mark.timeout(120)
def test_sinter_collect_cli_with_the_tsim_sampler(tmp_path):
    """The real ``sinter collect`` loads the sampler, writes tsim rows, and tsim's answer is not
    the one plain stim (tags ignored) would give."""
    folder = tmp_path / "circuits"
    generate(["--out", str(folder), "-d", "3", "-p", "0.02", "--types", "rep_t_memory"])
    (circuit_file,) = discover_circuits(folder, allow_tagged_gates=True)
    out = tmp_path / "out.csv"
    shots = 20_000
    proc = subprocess.run(
        [_sinter_cli(), "collect", "--circuits", str(circuit_file.path),
         "--metadata_func", "auto", "--decoders", "tsim",
         "--custom_decoders_module_function", "qec_kiln.tsim:sinter_samplers",
         "--max_shots", str(shots), "--max_errors", "1000000", "--processes", "1",
         "--save_resume_filepath", str(out), "--quiet"],
        capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (stat,) = sinter.read_stats_from_csv_files(out)
    assert stat.decoder == "tsim"
    assert stat.json_metadata == {"d": 3, "p": 0.02, "type": "rep_t_memory"}
    assert stat.strong_id == circuit_file.strong_id("tsim")  # what qec-kiln plans with
    assert stat.shots == shots and stat.discards == 0  # --max_shots holds exactly

    tsim_rate = stat.errors / stat.shots
    stim_shots = 200_000
    stim_rate = _stim_pymatching_rate(circuit_file.circuit, circuit_file.dem, stim_shots)
    # Measured: tsim ~0.046, plain stim ~0.013 (an X error before the T-dagger is a non-Pauli
    # error with a real T, a correctable Y error with the tag ignored).
    assert 0.03 < tsim_rate < 0.065, tsim_rate
    assert 0.005 < stim_rate < 0.025, stim_rate
    assert _z(tsim_rate, stat.shots, stim_rate, stim_shots) > 8


@needs_tsim
@pytest.mark.timeout(120)
def test_tsim_matches_the_truth_where_ignoring_the_tag_does_not():
    """T.T = S: a circuit with each logical T doubled is, physically, the Clifford twin with S.

    tsim on the doubled-T circuit must reproduce stim's exact simulation of the S twin; plain stim
    on the doubled-T circuit (tags ignored: S.S = Z) gives a very different logical error rate.
    All three are decoded with the same decoder (the S twin's detector error model).
    """
    from qec_kiln.tsim import TsimSampler

    d, p = 3, 0.05
    doubled = stim.Circuit(
        repetition_t_memory(d, p)
        .replace("S[T] 0\n", "S[T] 0\nS[T] 0\n")
        .replace("S_DAG[T] 0\n", "S_DAG[T] 0\nS_DAG[T] 0\n")
    )
    truth = stim.Circuit(repetition_t_memory(d, p, tagged=False))
    dem = truth.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)

    n_stim = 200_000
    truth_rate = _stim_pymatching_rate(truth, dem, n_stim)
    ignored_rate = _stim_pymatching_rate(doubled, dem, n_stim)

    task = sinter.Task(circuit=doubled, decoder="tsim", detector_error_model=dem)
    compiled = TsimSampler(batch_size=8192, seed=11).compiled_sampler_for_task(task)
    total = sinter.AnonTaskStats()
    for n in (1, 5, 100, 30_000):  # uneven requests: sinter gets exactly what it asks for
        stats = compiled.sample(n)
        assert stats.shots == n
        total += stats
    tsim_rate = total.errors / total.shots

    # Measured: truth ~0.068, tsim ~0.067, plain stim with the tags ignored ~0.185.
    assert _z(tsim_rate, total.shots, truth_rate, n_stim) < 4.5, (tsim_rate, truth_rate)
    assert _z(ignored_rate, n_stim, truth_rate, n_stim) > 20, (ignored_rate, truth_rate)


@pytest.mark.slow
@needs_tsim
@pytest.mark.timeout(60)
def test_a_detector_that_a_t_gate_makes_random_is_refused():
    """With the tag ignored (S) the Y measurement of S|+> is deterministic; with T it is not."""
    from qec_kiln.tsim import TsimSampler

    circuit = stim.Circuit(
        "RX 0\nR 1\nS[T] 0\nX_ERROR(0.1) 1\nMY 0\nM 1\n"
        "DETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-2]\n"
    )
    task = sinter.Task(circuit=circuit, decoder="tsim",
                       detector_error_model=circuit.detector_error_model())
    with pytest.raises(ValueError, match=r"observable\(s\) \(L0\) are random"):
        TsimSampler(batch_size=64).compiled_sampler_for_task(task)


def test_sampler_arguments_are_checked_without_tsim():
    from qec_kiln.tsim import TsimSampler

    with pytest.raises(ValueError, match="not one of sinter's decoders"):
        TsimSampler(decoder="no-such-decoder")
    with pytest.raises(ValueError, match="positive"):
        TsimSampler(batch_size=0)

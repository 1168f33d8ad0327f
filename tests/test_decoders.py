"""Issue 19 item 5: every decoder a researcher uses runs a sweep end to end (pymatching,
pymatching-correlated, fusion_blossom, chromobius on a colour code with 4-coordinate detectors,
tesseract), a decoder the cost model has not measured is timed by a short pilot, and nodes are
told to install each decoder's package."""

from __future__ import annotations

import pathlib

import pytest
import stim

import qec_kiln
from qec_kiln._backends.skypilot.ship import node_requirements


def steane_color_code(p: float, rounds: int = 3) -> stim.Circuit:
    """The [[7,1,3]] colour code, a Z memory under bit flips; each detector has (x, y, t,
    colour + 3) coordinates, as chromobius wants (RedZ=3, GreenZ=4, BlueZ=5)."""
    plaquettes = [(3, 4, 5, 6), (1, 2, 5, 6), (0, 2, 4, 6)]
    c = stim.Circuit()
    c.append("R", range(10))
    for r in range(rounds):
        c.append("X_ERROR", range(7), p)
        for k, plaq in enumerate(plaquettes):
            for q in plaq:
                c.append("CX", [q, 7 + k])
        c.append("MR", [7, 8, 9])
        for k in range(3):
            targets = [stim.target_rec(-3 + k)] + ([stim.target_rec(-6 + k)] if r else [])
            c.append("DETECTOR", targets, [k, 0, r, 3 + k])
    c.append("M", range(7))
    for k, plaq in enumerate(plaquettes):
        c.append("DETECTOR", [stim.target_rec(-7 + q) for q in plaq] + [stim.target_rec(-10 + k)],
                 [k, 0, rounds, 3 + k])
    c.append("OBSERVABLE_INCLUDE", [stim.target_rec(-7 + q) for q in range(7)], 0)
    return c


def _surface(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=3,
                               after_clifford_depolarization=0.005,
                               before_measure_flip_probability=0.005)
    (folder / "d=3,p=0.005,type=surface.stim").write_text(str(c))
    return folder


CASES = {
    "built-in": dict(decoders=["pymatching", "pymatching-correlated", "fusion_blossom"]),
    "tesseract": dict(decoders=["tesseract"], custom_decoders_module_function=(
        "tesseract_decoder:make_tesseract_sinter_decoders_dict")),
    "chromobius": dict(decoders=["chromobius"],
                       custom_decoders_module_function="chromobius:sinter_decoders"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_decoder_runs_a_sweep(tmp_path, case):
    settings = CASES[case]
    pytest.importorskip(settings.get("custom_decoders_module_function", "pymatching:x").split(":")[0])
    folder = tmp_path / "c"
    if case == "chromobius":
        folder.mkdir()
        (folder / "d=3,p=0.02,type=steane.stim").write_text(str(steane_color_code(0.02)))
    else:
        _surface(folder)
    lines: list[str] = []
    r = qec_kiln.launch(folder, bucket=str(tmp_path / "b"), max_shots=2000, max_errors=10_000,
                        log=lines.append, **settings)
    assert r.failed == [], lines
    # A decoder the model was not fitted on is timed here, never silently guessed.
    if set(settings["decoders"]) - {"pymatching"}:
        assert any("not in the cost model: timing" in line for line in lines), lines
    report = qec_kiln.merge(str(tmp_path / "b"), None)
    assert sorted(s.decoder for s in report.stats) == sorted(settings["decoders"])
    assert all(s.shots == 2000 for s in report.stats)
    planned = {s.strong_id for b in r.plan.batches for s in b.shards}
    assert {s.strong_id for s in report.stats} == planned


def test_nodes_install_each_decoders_package():
    reqs = [r.split("==")[0] for r in node_requirements("s3://b", ["fusion_blossom"])]
    assert "fusion-blossom" in reqs
    reqs = [r.split("==")[0] for r in node_requirements("s3://b", ["chromobius"],
                                                         "chromobius:sinter_decoders")]
    assert "chromobius" in reqs
    reqs = [r.split("==")[0] for r in node_requirements(
        "s3://b", ["tesseract"], "tesseract_decoder:make_tesseract_sinter_decoders_dict")]
    assert "tesseract-decoder" in reqs

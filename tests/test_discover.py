"""Discovery: metadata exactly as `sinter collect --metadata_func auto`, and clear refusals."""

from __future__ import annotations

import pathlib

import pytest
import sinter
import stim

from qec_kiln._discover import check_duplicates, discover_circuits
from qec_kiln._errors import KilnError


def test_metadata_and_keys_match_sinter_auto(small_circuits):
    circuits = discover_circuits(small_circuits)
    assert [c.key for c in circuits] == sorted(p.name for p in small_circuits.glob("*.stim"))
    for c in circuits:
        assert c.metadata == sinter.comma_separated_key_values(str(c.path))
        assert c.metadata["type"] == "rotated_surface_memory" and c.metadata["b"] == "X"
        assert isinstance(c.metadata["d"], int) and isinstance(c.metadata["p"], float)
        assert c.circuit == stim.Circuit(c.path.read_text())


def test_strong_id_matches_a_sinter_task(small_circuits):
    c = discover_circuits(small_circuits)[0]
    circuit = stim.Circuit(c.path.read_text())
    dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    task = sinter.Task(circuit=circuit, decoder="pymatching", detector_error_model=dem,
                       json_metadata=sinter.comma_separated_key_values(str(c.path)))
    assert c.strong_id("pymatching") == task.strong_id()
    assert c.strong_id("pymatching") != c.strong_id("vacuous")


def test_subfolders_are_searched_and_keys_are_relative(tmp_path, small_circuits):
    sub = small_circuits / "more"
    sub.mkdir()
    (sub / "d=3,p=0.002,b=X.stim").write_text(
        str(stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
                                   before_round_data_depolarization=0.002)))
    keys = [c.key for c in discover_circuits(small_circuits)]
    assert "more/d=3,p=0.002,b=X.stim" in keys and len(keys) == 5


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("d=3.stim", "H 0\nCNOT 0 1 2\nM 0\n", "not a valid stim circuit"),
        ("d=3.stim", "M 0\nDETECTOR rec[-1]\n", "no OBSERVABLE_INCLUDE"),
        ("d=3.stim", "M 0\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "no DETECTOR"),
        ("plainname.stim", "M 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "key=value"),
        ("d=3.stim", "S[T] 0\nM 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "tsim"),
    ],
)
def test_bad_circuit_is_refused_naming_the_file(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    with pytest.raises(KilnError) as info:
        discover_circuits(tmp_path)
    assert name in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_missing_and_non_stim_folders(tmp_path):
    with pytest.raises(KilnError, match="empty"):
        discover_circuits(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(KilnError, match="no .stim files"):
        discover_circuits(tmp_path)
    with pytest.raises(KilnError, match="no such folder"):
        discover_circuits(tmp_path / "nope")


def test_same_circuit_and_name_in_two_folders_is_a_duplicate(tmp_path, small_circuits):
    one = next(small_circuits.glob("*.stim"))
    (small_circuits / "copy").mkdir()
    (small_circuits / "copy" / one.name).write_bytes(one.read_bytes())
    circuits = discover_circuits(small_circuits)
    with pytest.raises(KilnError, match="same circuit and metadata"):
        check_duplicates(circuits, ["pymatching"])


def test_hostile_names_are_just_names(tmp_path):
    c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
                               before_round_data_depolarization=0.01)
    name = "d=3,p=0.01,note=a b'c\";$(touch pwned)é.stim"
    (tmp_path / name).write_text(str(c))
    [found] = discover_circuits(tmp_path)
    assert found.key == name
    assert found.metadata["note"] == "a b'c\";$(touch pwned)é"
    assert not pathlib.Path("pwned").exists()


def test_circuit_without_a_decomposed_dem_gets_sinters_fallback_strong_id(tmp_path):
    """sinter falls back to an undecomposed DEM (hypergraph decoders such as chromobius or
    tesseract use it); discovery must accept the circuit and agree with sinter's strong_id."""
    text = ("X_ERROR(0.1) 0\nM 0\nDETECTOR rec[-1]\nDETECTOR rec[-1]\nDETECTOR rec[-1]\n"
            "OBSERVABLE_INCLUDE(0) rec[-1]\n")
    circuit = stim.Circuit(text)
    with pytest.raises(ValueError):
        circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    (tmp_path / "d=1,p=0.1.stim").write_text(text)
    [found] = discover_circuits(tmp_path)
    fallback = circuit.detector_error_model(approximate_disjoint_errors=True)
    assert found.dem == fallback
    task = sinter.Task(circuit=circuit, decoder="vacuous", detector_error_model=fallback,
                       json_metadata={"d": 1, "p": 0.1})
    assert found.strong_id("vacuous") == task.strong_id()

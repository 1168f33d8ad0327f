"""Discovery: metadata exactly as `sinter collect --metadata_func auto`, and clear refusals."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pymatching
import pytest
import sinter
import stim

from qec_kiln._errors import KilnError
from qec_kiln._sweep.discover import check_decodable, check_duplicates, discover_circuits


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
        # Names that sinter reads without complaint into metadata nobody meant.
        ("d=3,p=nan.stim", "M 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "p=nan is not a finite"),
        ("d=3,p=inf.stim", "M 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "p=inf is not a finite"),
        ("d=3,p=-Infinity.stim", "M 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "finite"),
        ("d=3,d=5.stim", "M 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n", "key 'd' appears 2"),
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


HYPEREDGE = ("X_ERROR(0.1) 0\nM 0\nDETECTOR rec[-1]\nDETECTOR rec[-1]\nDETECTOR rec[-1]\n"
             "OBSERVABLE_INCLUDE(0) rec[-1]\n")


@pytest.mark.parametrize("decoder", ["pymatching", "pymatching-correlated", "fusion_blossom"])
def test_matching_decoder_refuses_a_circuit_it_cannot_decode(tmp_path, small_circuits, decoder):
    (small_circuits / "d=1,p=0.1,type=hyper.stim").write_text(HYPEREDGE)
    circuits = discover_circuits(small_circuits)
    with pytest.raises(KilnError) as info:
        check_decodable(circuits, ["vacuous", decoder])
    msg = str(info.value)
    assert "type=hyper.stim" in msg and decoder in msg and "hypergraph_union_find" in msg
    assert "D0 D1 D2" in msg and "\n" not in msg
    # Hypergraph decoders take it; the matching ones take the decomposable surface codes.
    check_decodable(circuits, ["hypergraph_union_find", "mw_parity_factor", "vacuous"])
    check_decodable([c for c in circuits if "hyper" not in c.key], [decoder])


def test_the_refused_circuit_really_fails_in_pymatching(tmp_path):
    """What the node would do: pymatching 2.4 silently drops the 3-detector error from its graph,
    then cannot decode a shot that fired it."""
    (tmp_path / "d=1,p=0.1.stim").write_text(HYPEREDGE)
    [found] = discover_circuits(tmp_path)
    matching = pymatching.Matching.from_detector_error_model(found.dem)
    assert matching.num_edges == 0
    with pytest.raises(ValueError):
        matching.decode(np.array([1, 1, 1], dtype=np.uint8))


def test_an_undecomposable_error_inside_a_repeat_block_is_found(tmp_path):
    text = ("R 0\nX_ERROR(0.1) 0\nM 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n"
            "REPEAT 100 {\n    R 0\n    X_ERROR(0.1) 0\n    M 0\n" + "    DETECTOR rec[-1]\n" * 3 + "}\n")
    (tmp_path / "d=1,p=0.1,r=3.stim").write_text(text)
    circuits = discover_circuits(tmp_path)
    dem = str(circuits[0].dem)
    assert "repeat 100 {" in dem and "error(0.1000000000000000056) D1 D2 D3" in dem.split("{")[1]
    with pytest.raises(KilnError, match="r=3.stim"):
        check_decodable(circuits, ["pymatching"])


def test_symlinked_folders_are_followed_once(tmp_path, small_circuits):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "d=3,p=0.002,b=X.stim").write_text(
        str(stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
                                   before_round_data_depolarization=0.002)))
    (small_circuits / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(small_circuits, target_is_directory=True)  # a loop
    (small_circuits / "again").symlink_to(elsewhere, target_is_directory=True)  # a second route
    lines: list[str] = []
    keys = [c.key for c in discover_circuits(small_circuits, log=lines.append)]
    assert "again/d=3,p=0.002,b=X.stim" in keys and len(keys) == 5  # 'again' sorts first
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), lines
    assert any("linked" in line and "searched already" in line for line in lines), lines
    assert any("back" in line and "symlink loop" in line for line in lines), lines


@pytest.mark.parametrize("name", ["d=5,p=0.001.stim", "more"])
def test_a_dangling_symlink_is_refused(small_circuits, name):
    (small_circuits / name).symlink_to(small_circuits / "gone")
    with pytest.raises(KilnError, match=f"{name}: a symbolic link to .*gone.*does not exist"):
        discover_circuits(small_circuits)


def test_a_fifo_named_stim_is_refused_not_read(small_circuits):
    (small_circuits / "sub").mkdir()
    os.mkfifo(small_circuits / "sub" / "d=5,p=0.002.stim")
    with pytest.raises(KilnError, match=r"sub/d=5,p=0.002.stim: not a regular file \(a FIFO\)"):
        discover_circuits(small_circuits)


def test_an_unreadable_sub_folder_is_refused(small_circuits):
    """As root (which reads anything) the check runs with every capability dropped (setpriv)."""
    locked = small_circuits / "locked"
    locked.mkdir()
    shutil.copy(next(small_circuits.glob("*.stim")), locked)
    locked.chmod(0)
    try:
        prefix = []
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot make a folder unreadable")
            prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
        code = ("import sys; from qec_kiln._sweep.discover import discover_circuits\n"
                "from qec_kiln._errors import KilnError\n"
                "try: discover_circuits(sys.argv[1])\n"
                "except KilnError as e: print(e); sys.exit(3)\n")
        proc = subprocess.run([*prefix, sys.executable, "-c", code, str(small_circuits)],
                              capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"{locked}: cannot list the folder (Permission denied)" in proc.stdout
    assert "chmod" in proc.stdout


def test_metadata_written_two_ways_is_refused(tmp_path):
    text = "M 0\nDETECTOR rec[-1]\nOBSERVABLE_INCLUDE(0) rec[-1]\n"
    (tmp_path / "d=3,p=0.001.stim").write_text(text)
    (tmp_path / "p=0.001,d=3.stim").write_text(text)
    with pytest.raises(KilnError) as info:
        discover_circuits(tmp_path)
    assert "d=3,p=0.001.stim" in str(info.value) and "p=0.001,d=3.stim" in str(info.value)
    (tmp_path / "p=0.001,d=3.stim").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d=3.0,p=0.001.stim").write_text(text)  # 3 vs 3.0: another strong_id
    with pytest.raises(KilnError, match="written differently"):
        discover_circuits(tmp_path)
    (tmp_path / "sub" / "d=3.0,p=0.001.stim").rename(tmp_path / "sub" / "d=5,p=0.001.stim")
    assert len(discover_circuits(tmp_path)) == 2

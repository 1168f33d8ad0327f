"""Issue 19 item 4: sinter's postselection flags and --custom-error-count-key pass through, with
the strong_ids, targets and merge sinter itself gives; each checked against one plain
`sinter collect` run of the same circuits."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import pytest
import sinter
import stim
from sinter._command._main_collect import iter_file_paths_into_goals, parse_args

import qec_kiln
from qec_kiln._errors import KilnError
from qec_kiln._planning._cost import strong_id_of


def _circuits(folder: pathlib.Path) -> pathlib.Path:
    """Two repetition-code circuits whose first detectors (coords t=0) postselect visibly."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in (3, 5):
        c = stim.Circuit.generated("repetition_code:memory", distance=d, rounds=3,
                                   after_clifford_depolarization=0.03,
                                   before_measure_flip_probability=0.01)
        (folder / f"d={d},p=0.03.stim").write_text(str(c))
    return folder


def _sinter_ids(folder: pathlib.Path, flags: list[str]) -> set[str]:
    """The strong_ids plain `sinter collect --metadata_func auto FLAGS` gives (its own parser
    and task builder)."""
    paths = sorted(str(p) for p in folder.glob("*.stim"))
    args = parse_args(["--circuits", *paths, "--decoders", "pymatching", "--max_shots", "1",
                       "--processes", "1", "--metadata_func", "auto", *flags])
    tasks = iter_file_paths_into_goals(paths, args.metadata_func,
                                       args.postselected_detectors_predicate,
                                       args.postselected_observables_predicate)
    out = set()
    for t in tasks:
        t.decoder = "pymatching"
        out.add(strong_id_of(t))
    return out


def _plan_ids(folder, **settings) -> set[str]:
    p = qec_kiln.plan(folder, bucket=str(folder.parent / "bucket"), **settings)
    return {s.strong_id for b in p.batches for s in b.shards}


@pytest.mark.parametrize("settings, flags", [
    ({"postselected_detectors_predicate": "coords[1] == 0"},
     ["--postselected_detectors_predicate", "coords[1] == 0"]),
    ({"postselected_detectors_predicate": "index < 3 and metadata['d'] == 5"},
     ["--postselected_detectors_predicate", "index < 3 and metadata['d'] == 5"]),
    ({"postselected_observables_predicate": "True"},
     ["--postselected_observables_predicate", "True"]),
])
def test_postselection_strong_ids_are_sinters(tmp_path, settings, flags):
    folder = _circuits(tmp_path / "c")
    plain = _plan_ids(folder)
    ids = _plan_ids(folder, **settings)
    assert ids == _sinter_ids(folder, flags)
    if "postselected_detectors_predicate" in settings:
        assert ids != plain  # the detector mask is part of the id


def test_custom_error_count_key_keeps_strong_ids_and_makes_a_new_sweep(tmp_path):
    folder = _circuits(tmp_path / "c")
    a = qec_kiln.plan(folder, bucket=str(tmp_path / "b"))
    b = qec_kiln.plan(folder, bucket=str(tmp_path / "b"), custom_error_count_key="detection_events",
                      sinter_options=["--count_detection_events"])
    assert {s.strong_id for x in a.batches for s in x.shards} == \
        {s.strong_id for x in b.batches for s in x.shards}
    assert a.sweep != b.sweep
    assert b.manifest.sinter_args[-2:] == ["--custom_error_count_key", "detection_events"]


def test_bad_predicates_are_refused_in_one_line(tmp_path):
    folder = _circuits(tmp_path / "c")
    with pytest.raises(KilnError, match="not a Python expression"):
        qec_kiln.plan(folder, postselected_detectors_predicate="coords[")
    with pytest.raises(KilnError, match="predicate failed"):
        qec_kiln.plan(folder, postselected_detectors_predicate="metadata['nope']")
    with pytest.raises(KilnError, match="cannot be combined"):
        qec_kiln.plan(folder, postselected_detectors_predicate="True",
                      postselect_detectors_with_non_zero_4th_coord=True)
    with pytest.raises(KilnError, match="--postselected-detectors-predicate"):
        qec_kiln.plan(folder, sinter_options=["--postselected_detectors_predicate=True"])


def _within_5_sigma(a: tuple[int, int], b: tuple[int, int]) -> bool:
    (k1, n1), (k2, n2) = a, b
    p = (k1 + k2) / (n1 + n2)
    sigma = math.sqrt(max(p * (1 - p), 1e-12) * (1 / n1 + 1 / n2))
    return abs(k1 / n1 - k2 / n2) <= 5 * sigma


def _plain_sinter(folder: pathlib.Path, out: pathlib.Path, flags: list[str]) -> dict[str, sinter.TaskStats]:
    paths = sorted(str(p) for p in folder.glob("*.stim"))
    subprocess.run([str(pathlib.Path(sys.executable).with_name("sinter")), "collect",
                    "--circuits", *paths, "--decoders", "pymatching", "--processes", "1",
                    "--metadata_func", "auto", "--save_resume_filepath", str(out), "--quiet",
                    *flags], check=True, timeout=300)
    return {s.strong_id: s for s in sinter.read_stats_from_csv_files(out)}


@pytest.mark.slow
def test_postselected_sweep_matches_plain_sinter(tmp_path):
    """Same strong_ids, and discard and error rates within 5 sigma of one plain sinter run."""
    folder = _circuits(tmp_path / "c")
    pred = "coords[1] == 0"
    r = qec_kiln.launch(folder, bucket=str(tmp_path / "b"), name="ps", max_shots=20_000,
                        max_errors=100_000, postselected_detectors_predicate=pred)
    assert r.failed == []
    kiln = {s.strong_id: s for s in qec_kiln.merge(str(tmp_path / "b"), None).stats}
    plain = _plain_sinter(folder, tmp_path / "plain.csv",
                          ["--max_shots", "20000", "--max_errors", "100000",
                           "--postselected_detectors_predicate", pred])
    assert set(kiln) == set(plain)
    for sid, k in kiln.items():
        p = plain[sid]
        assert k.shots == p.shots == 20_000
        assert k.discards > 0
        assert _within_5_sigma((k.discards, k.shots), (p.discards, p.shots))
        assert _within_5_sigma((k.errors, k.shots - k.discards), (p.errors, p.shots - p.discards))


@pytest.mark.slow
def test_custom_error_count_key_targets_that_count_like_plain_sinter(tmp_path):
    """max_errors counts detection_events: sinter stops there, merge and status judge by it."""
    folder = _circuits(tmp_path / "c")
    flags = ["--max_shots", "1000000", "--max_errors", "3000", "--count_detection_events",
             "--custom_error_count_key", "detection_events"]
    r = qec_kiln.launch(folder, bucket=str(tmp_path / "b"), name="ck", max_shots=1_000_000,
                        max_errors=3000, custom_error_count_key="detection_events",
                        sinter_options=["--count_detection_events"])
    assert r.failed == []
    report = qec_kiln.merge(str(tmp_path / "b"), None)
    assert report.reached == report.total == 2
    kiln = {s.strong_id: s for s in report.stats}
    plain = _plain_sinter(folder, tmp_path / "plain.csv", flags)
    assert set(kiln) == set(plain)
    for sid, k in kiln.items():
        p = plain[sid]
        assert k.custom_counts["detection_events"] >= 3000 and k.shots < 1_000_000
        assert _within_5_sigma(
            (k.custom_counts["detection_events"], k.custom_counts["detectors_checked"]),
            (p.custom_counts["detection_events"], p.custom_counts["detectors_checked"]))
    (status,) = qec_kiln.status(str(tmp_path / "b"))
    assert status.fraction_done == 1.0
    assert all(b.errors >= 3000 for b in status.batches)

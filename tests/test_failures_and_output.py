"""Issue 19 items 6-8: a failed batch says why in one line where the user looks, a sweep can be
removed from a bucket, merge judges several sweeps one by one, the API prints nothing without
``log=``, progress never says 100% while a batch samples, and times and costs read plainly."""

from __future__ import annotations

import json
import pathlib

import pytest
import stim

import qec_kiln
from qec_kiln._errors import KilnError
from qec_kiln._report.units import percent
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.batches import Shard
from qec_kiln._sweep.lease import acquire, lease_key
from qec_kiln._sweep.progress import ShardProgress


def _one_circuit(folder: pathlib.Path, p: float = 0.01) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
                               after_clifford_depolarization=p)
    (folder / f"d=3,p={p}.stim").write_text(str(c))
    return folder


@pytest.mark.slow
def test_a_failed_batch_says_why_and_its_sweep_can_be_removed(tmp_path, kiln):
    """chromobius on circuits without 4-coordinate detectors: the ValueError reaches launch,
    status and status --json; merge reports that sweep apart; remove takes it out."""
    bucket = str(tmp_path / "bucket")
    circuits = _one_circuit(tmp_path / "c")
    r = kiln("launch", str(circuits), "--decoders", "chromobius", "--custom-decoders-module-function",
             "chromobius:sinter_decoders", "--max-shots", "1000", "--bucket", bucket, "--name", "bad")
    assert r.returncode != 0
    why = "ValueError: Expected all detectors to have at least 4 coordinates"
    assert why in r.stderr, r.stderr
    r = kiln("status", "--bucket", bucket, "--sweep", "bad")
    assert why in r.stdout, r.stdout
    data = json.loads(kiln("status", "--bucket", bucket, "--sweep", "bad", "--json").stdout)
    assert why in data[0]["batches"][0]["error"]

    good = _one_circuit(tmp_path / "g", p=0.02)
    kiln("launch", str(good), "--max-shots", "2000", "--bucket", bucket, "--name", "good", check=True)
    r = kiln("merge", "--bucket", bucket, "--out", str(tmp_path / "m.csv"), check=True)
    assert "(1 rows from 2 sweeps)" in r.stdout, r.stdout
    assert "sweep good: 1 task(s), 1 of 1 reached" in r.stdout, r.stdout
    assert "sweep bad: 1 task(s), 0 of 1 reached" in r.stdout and "remove --sweep bad" in r.stdout

    r = kiln("remove", "--bucket", bucket, "--sweep", "bad", "--dry-run", check=True)
    assert "would remove" in r.stdout and "bad/manifest.json" in r.stdout
    r = kiln("remove", "--bucket", bucket, "--sweep", "bad")  # no terminal to confirm on
    assert r.returncode == 2 and "--yes" in r.stderr
    kiln("remove", "--bucket", bucket, "--sweep", "bad", "--yes", check=True)
    assert qec_kiln.status(bucket)[0].manifest.sweep == "good"
    r = kiln("merge", "--bucket", bucket, "--out", str(tmp_path / "m.csv"), check=True)
    assert "1 of 1 task(s) reached" in r.stdout, r.stdout


def test_remove_refuses_while_a_batch_runs(tmp_path):
    bucket = str(tmp_path / "bucket")
    store = open_bucket(bucket)
    store.write_bytes("s1/manifest.json", b"{}")
    lease = acquire(store, lease_key("s1", "b000"), seconds=60)  # this process: alive
    with pytest.raises(KilnError, match="still runs: b000"):
        from qec_kiln._report.remove import remove_sweep

        remove_sweep(store, "s1", {})
    assert store.exists("s1/manifest.json")
    del lease


@pytest.mark.slow
def test_launch_without_log_prints_nothing(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("QEC_KILN_PROGRESS_SECONDS", "0.1")
    circuits = _one_circuit(tmp_path / "c")
    r = qec_kiln.launch(circuits, bucket=str(tmp_path / "b"), max_shots=5000)
    assert r.failed == []
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "", captured
    lines: list[str] = []
    qec_kiln.launch(circuits, bucket=str(tmp_path / "b2"), max_shots=5000, log=lines.append)
    assert any(line.startswith("progress:") for line in lines), lines


def test_progress_counts_shots_and_errors_against_the_targets_not_predictions():
    """A model that predicted 100 shots (it was wrong): 5,000 of 1,000,000 is 0.5%, not 100%."""
    shard = Shard("c", "tesseract", "id", max_shots=1_000_000, max_errors=1000,
                  predicted_seconds=4.0, predicted_shots=100)
    assert ShardProgress(shard, 5000, 3, 10.0).fraction == pytest.approx(0.005)
    assert ShardProgress(shard, 999_999, 3, 10.0).fraction < 1.0
    assert percent(ShardProgress(shard, 999_999, 3, 10.0).fraction) == "99%"
    assert ShardProgress(shard, 1_000_000, 3, 10.0).fraction == 1.0


def test_plan_shows_times_in_a_fitting_unit_and_a_cost_below_a_cent(tmp_path, kiln):
    circuits = _one_circuit(tmp_path / "c")
    (circuits / "notes.txt").write_text("d=3 was run on Tuesday")
    r = kiln("plan", str(circuits), "--max-shots", "10000", "--price-per-cpu-hour", "0.05",
             "--bucket", str(tmp_path / "b"), check=True)
    assert "estimated cost: below 0.01" in r.stdout, r.stdout
    assert " s of CPU time" in r.stdout and "CPU-hours" not in r.stdout, r.stdout
    assert "skipped 1 file(s) not ending in .stim: notes.txt" in r.stderr, r.stderr


def test_a_repeated_decoder_is_refused_by_name(tmp_path, kiln):
    r = kiln("plan", str(_one_circuit(tmp_path / "c")), "--decoders", "pymatching", "pymatching")
    assert r.returncode == 2 and "names 'pymatching' twice" in r.stderr, r.stderr

"""Issue 19 item 7: `qec_kiln.collect` takes what `sinter.collect` takes (Tasks, circuits) and
returns `list[sinter.TaskStats]` with sinter's strong_ids; `merge(out=None)` returns stats and
writes nothing."""

from __future__ import annotations

import json
import os

import pytest
import sinter
import stim

import qec_kiln
from qec_kiln._errors import KilnError


def _circuit(d: int, p: float = 0.05) -> stim.Circuit:
    return stim.Circuit.generated("repetition_code:memory", distance=d, rounds=3,
                                  after_clifford_depolarization=p)


@pytest.mark.slow
def test_collect_takes_sinter_tasks_and_returns_their_stats(tmp_path):
    tasks = [
        sinter.Task(circuit=_circuit(3), json_metadata={"d": 3, "p": 0.05}),  # a k=v name
        sinter.Task(circuit=_circuit(5), json_metadata={"d": 5, "note": "a, b=c", "l": [1, 2.0]}),
        sinter.Task(circuit=_circuit(3, 0.02), json_metadata=None),
    ]
    bucket = str(tmp_path / "b")
    stats = qec_kiln.collect(tasks, decoders=["pymatching"], max_shots=3000, max_errors=10_000,
                             bucket=bucket)
    assert all(isinstance(s, sinter.TaskStats) for s in stats)
    want = {sinter.Task(circuit=t.circuit, decoder="pymatching", json_metadata=t.json_metadata,
                        detector_error_model=t.circuit.detector_error_model(
                            decompose_errors=True, approximate_disjoint_errors=True)).strong_id()
            for t in tasks}
    assert {s.strong_id for s in stats} == want
    assert sorted(s.shots for s in stats) == [3000] * 3
    key = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731 - sinter's CSV sorts the keys
    assert {key(s.json_metadata) for s in stats} == {key(t.json_metadata) for t in tasks}
    # Again: the same sweep, already finished (resumed, nothing sampled twice).
    again = qec_kiln.collect(tasks, decoders=["pymatching"], max_shots=3000, max_errors=10_000,
                             bucket=bucket)
    assert sorted(s.shots for s in again) == [3000] * 3
    assert len(qec_kiln.status(bucket)) == 1
    # merge(out=None): the stats, and no file named "None".
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        report = qec_kiln.merge(bucket, None)
    finally:
        os.chdir(cwd)
    assert {s.strong_id for s in report.stats} == want and not (tmp_path / "None").exists()


def test_collect_refuses_a_task_whose_model_the_nodes_would_not_build(tmp_path):
    c = _circuit(3)
    task = sinter.Task(circuit=c, decoder="pymatching", json_metadata={"d": 3},
                       detector_error_model=c.detector_error_model())  # not decomposed
    with pytest.raises(KilnError, match="detector_error_model or postselection masks"):
        qec_kiln.collect([task], max_shots=100, bucket=str(tmp_path / "b"))
    with pytest.raises(KilnError, match="the same json_metadata"):
        qec_kiln.collect([sinter.Task(circuit=c, json_metadata={"d": 3}),
                          sinter.Task(circuit=_circuit(5), json_metadata={"d": 3})],
                         max_shots=100, bucket=str(tmp_path / "b"))

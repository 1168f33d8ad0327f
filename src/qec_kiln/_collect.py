"""``qec_kiln.collect``: ``sinter.collect`` over qec-kiln's machines. It takes ``sinter.Task`` s
(or ``stim.Circuit`` s, or paths as ``launch`` does), runs them as one sweep (plan, batches,
resume files in the bucket) and returns the merged ``list[sinter.TaskStats]``, with the
strong_ids ``sinter.collect`` gives the same tasks.

    >>> import stim, sinter, tempfile, qec_kiln
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...                            after_clifford_depolarization=0.05)
    >>> task = sinter.Task(circuit=c, json_metadata={"d": 3, "note": "a, b"})
    >>> stats = qec_kiln.collect([task], decoders=["pymatching"], max_shots=2000,
    ...                          max_errors=50, bucket=tempfile.mkdtemp())  # doctest: +SKIP
    >>> stats[0].json_metadata, stats[0].strong_id == sinter.Task(circuit=c,  # doctest: +SKIP
    ...     decoder="pymatching", json_metadata=task.json_metadata).strong_id()
    ({'d': 3, 'note': 'a, b'}, True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._backends import kiln_home
from qec_kiln._command._base import quiet
from qec_kiln._command._main_launch import launch
from qec_kiln._command._main_merge import merge
from qec_kiln._command._main_plan import plan
from qec_kiln._command._main_status import status
from qec_kiln._errors import KilnError, Log

if TYPE_CHECKING:
    import sinter


def collect(tasks: Any, *, decoders: Sequence[str] | None = None,
            log: Log | None = None, poll_seconds: float = 10.0,
            **settings: Any) -> list[sinter.TaskStats]:
    """Sample ``tasks`` as one sweep and return its merged stats, as ``sinter.collect`` does.
    The same tasks again resume the same sweep (its name is a digest of them), as sinter
    resumes a ``save_resume_filepath``.

    Args:
        tasks: ``sinter.Task`` s with a circuit and json_metadata, ``stim.Circuit`` s, or a
            folder/files as in :func:`qec_kiln.launch`. A task's own ``detector_error_model``
            or postselection masks must be those sinter collect builds from its circuit and the
            postselection settings (else refused: the nodes run ``sinter collect``).
        decoders: as in ``sinter.collect`` (default: the tasks' own decoder, else pymatching).
        log: as in :func:`qec_kiln.plan`.
        poll_seconds: how often a remote backend's jobs are asked about while waiting.
        **settings: :func:`qec_kiln.launch`'s (``max_shots``, ``max_errors``, ``bucket``,
            ``backend``, ``postselected_detectors_predicate``, ...).

    Returns:
        The merged rows, one ``sinter.TaskStats`` per task and decoder, with the strong_ids
        ``sinter.collect`` gives the same tasks (example: this module's docstring).
    """
    from qec_kiln._planning._cost import strong_id_of
    from qec_kiln._sweep.memory import is_in_memory, write_tasks

    given: list[sinter.Task] = []
    circuits = tasks
    if is_in_memory(tasks):
        import sinter

        circuits, own = write_tasks(tasks, kiln_home() / "collect")
        given = [t for t in ([tasks] if isinstance(tasks, sinter.Task) else list(tasks))
                 if isinstance(t, sinter.Task)]
        if decoders is None and own:
            if len(own) > 1 and any(t.decoder is None for t in given):
                raise KilnError("some tasks name a decoder and some do not; give decoders=[...]")
            decoders = own
    if decoders is not None:
        settings["decoders"] = list(decoders)
    planned = plan(circuits, log=log or quiet, **settings)
    ids = {s.strong_id for b in planned.batches for s in b.shards}
    for i, task in enumerate(given):
        own_model = (task.detector_error_model is not None or task.postselection_mask is not None
                     or task.postselected_observables_mask is not None)
        if not own_model:
            continue
        for d in [task.decoder] if task.decoder else planned.manifest.decoders:
            full = _with_decoder(task, d)
            if strong_id_of(full) not in ids:
                raise KilnError(
                    f"task {i}: its detector_error_model or postselection masks are not the ones "
                    "sinter collect builds from its circuit and the postselection settings, so "
                    "the nodes would sample another task; drop them (give the postselection as "
                    "postselected_detectors_predicate=...)")
    result = launch(circuits, log=log, **settings)
    if result.failed:
        raise KilnError(f"sweep {result.sweep!r}: {result.submission.message if result.submission else ''}"
                        f"; `qec-kiln status --bucket {result.bucket} --sweep {result.sweep}`")
    if result.interrupted:
        raise KeyboardInterrupt
    if result.cancelled:
        raise KilnError(f"sweep {result.sweep!r} was cancelled; collect again to resume")
    idle = 0
    while True:  # a backend that submitted jobs and returned: wait for them
        (report,) = status(result.bucket, sweep=result.sweep, log=log or quiet)
        if all(b.done for b in report.batches):
            break
        idle = 0 if any(b.job is not None and b.job.active for b in report.batches) else idle + 1
        if idle >= 3:  # no job runs or waits, three polls in a row: they ended unfinished
            raise KilnError(f"sweep {result.sweep!r} ended unfinished: "
                            f"{', '.join(report.unfinished)}; collect again to resume")
        time.sleep(poll_seconds)
    return merge(result.bucket, None, sweep=result.sweep, log=log).stats


def _with_decoder(task: sinter.Task, decoder: str) -> sinter.Task:
    import sinter

    return sinter.Task(circuit=task.circuit, decoder=decoder,
                       detector_error_model=task.detector_error_model,
                       postselection_mask=task.postselection_mask,
                       postselected_observables_mask=task.postselected_observables_mask,
                       json_metadata=task.json_metadata)


__all__ = ["collect"]

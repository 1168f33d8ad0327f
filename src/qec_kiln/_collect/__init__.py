"""``qec_kiln.collect`` and ``qec_kiln.iter_collect``: ``sinter.collect`` and
``sinter.iter_collect`` over qec-kiln's machines. Every keyword of sinter 1.16's signatures,
with sinter's meaning, plus ``bucket=`` and ``backend=`` (and any setting of
:func:`qec_kiln.launch`). The tasks run as one sweep (named by a digest of them: the same call
again resumes it), planned once; the nodes run the unmodified ``sinter collect``.

    >>> import stim, sinter, tempfile, qec_kiln
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...                            after_clifford_depolarization=0.05)
    >>> task = sinter.Task(circuit=c, json_metadata={"d": 3, "note": "a, b"})
    >>> stats = qec_kiln.collect(num_workers=1, tasks=[task], decoders=["pymatching"],
    ...                          max_shots=2000, max_errors=5000, bucket=tempfile.mkdtemp())
    >>> dem = c.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    >>> stats[0].json_metadata, stats[0].shots, stats[0].strong_id == sinter.Task(circuit=c,
    ...     decoder="pymatching", detector_error_model=dem, json_metadata={"d": 3, "note": "a, b"}
    ...     ).strong_id()
    ({'d': 3, 'note': 'a, b'}, 2000, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from qec_kiln._argtypes import DEFAULT_BUCKET
from qec_kiln._errors import KilnError, Log

if TYPE_CHECKING:
    import sinter

    from qec_kiln._collect.call import CollectCall
    from qec_kiln._collect.watch import FragmentWatcher


def iter_collect(tasks: Any = (), *, num_workers: int | None = None, hint_num_tasks: int | None = None,
                 additional_existing_data: Any = None, max_shots: int | None = None,
                 max_errors: int | None = None, decoders: Iterable[str] | None = None,
                 max_batch_seconds: int | None = None, max_batch_size: int | None = None,
                 start_batch_size: int | None = None, count_observable_error_combos: bool = False,
                 count_detection_events: bool = False,
                 custom_decoders: Mapping[str, Any] | None = None,
                 custom_error_count_key: str | None = None,
                 allowed_cpu_affinity_ids: Iterable[int] | None = None,
                 log: Log | None = None, poll_seconds: float | None = None,
                 **settings: Any) -> Iterator[sinter.Progress]:
    """``sinter.iter_collect`` over a fleet: yields ``sinter.Progress`` as rows reach the
    bucket (``new_stats``: the rows that landed since the last yield; ``status_message``:
    tasks left, shots, errors, ETA). Closing it early stops the sweep as ``qec-kiln cancel``
    does: every complete row is kept, and the same call resumes.

    Args:
        tasks, num_workers, ...: as in ``sinter.iter_collect`` (``tasks`` may also come
            first, unnamed; ``num_workers``: sinter's processes per batch, on a remote backend
            per node, unless ``backend_options`` gives ``processes``; default: the cores a
            batch gets). ``hint_num_tasks`` is only a hint. ``custom_decoders`` go
            to the plan (shipped to the nodes).
        log: receives qec-kiln's progress and warning lines (default: none).
        poll_seconds: how often the bucket is read (default 0.2 s locally, 10 s remote).
        **settings: :func:`qec_kiln.launch`'s (``bucket``, ``backend``, ``backend_options``,
            ``postselected_detectors_predicate``, ...).

    Yields:
        ``sinter.Progress``; the sum of all ``new_stats`` is what this call sampled.

    Examples:
        >>> import stim, sinter, tempfile, qec_kiln
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
        ...                            after_clifford_depolarization=0.05)
        >>> shots = 0
        >>> for progress in qec_kiln.iter_collect(num_workers=1, tasks=[sinter.Task(
        ...         circuit=c, json_metadata={"d": 3})], decoders=["vacuous"], max_shots=500,
        ...         bucket=tempfile.mkdtemp()):
        ...     shots += sum(s.shots for s in progress.new_stats)
        >>> shots
        500
    """
    kw = _sinter_keywords(locals())
    del hint_num_tasks  # a hint for sinter's status line; the plan counts the tasks itself
    items, root = _tasks_and_root(tasks)
    if additional_existing_data is not None:
        kw["existing_data_filepaths"] = [_write_stats(additional_existing_data, root)]
    return _iterate(items, kw, settings, root, log, poll_seconds, None)


def collect(tasks: Any = (), *, num_workers: int | None = None, existing_data_filepaths: Iterable[Any] = (),
            save_resume_filepath: Any = None,
            progress_callback: Callable[[sinter.Progress], None] | None = None,
            max_shots: int | None = None, max_errors: int | None = None,
            count_observable_error_combos: bool = False, count_detection_events: bool = False,
            decoders: Iterable[str] | None = None, max_batch_seconds: int | None = None,
            max_batch_size: int | None = None, start_batch_size: int | None = None,
            print_progress: bool = False, hint_num_tasks: int | None = None,
            custom_decoders: Mapping[str, Any] | None = None,
            custom_error_count_key: str | None = None,
            allowed_cpu_affinity_ids: Iterable[int] | None = None,
            log: Log | None = None, poll_seconds: float | None = None,
            **settings: Any) -> list[sinter.TaskStats]:
    """``sinter.collect`` over a fleet: sample ``tasks`` as one sweep and return the stats,
    built on :func:`iter_collect` as sinter's is.

    Args:
        tasks, num_workers, ...: as in ``sinter.collect`` and :func:`iter_collect`.
            ``save_resume_filepath`` ends holding every row sampled for these tasks (a
            sinter CSV; its rows count toward the targets, as do those of
            ``existing_data_filepaths``); ``print_progress`` prints the status to stderr;
            ``progress_callback`` gets each ``sinter.Progress``.
        log, poll_seconds, **settings: as in :func:`iter_collect`.

    Returns:
        One ``sinter.TaskStats`` per task (and decoder), with sinter's strong_ids: the rows
        of the bucket (this sweep's and any earlier one's) and of the given CSVs.

    Examples:
        See this module's docstring; README "From ``sinter.collect`` to a fleet".
    """
    kw = _sinter_keywords(locals())
    kw.update(existing_data_filepaths=list(existing_data_filepaths),
              save_resume_filepath=save_resume_filepath)
    items, root = _tasks_and_root(tasks)
    del hint_num_tasks
    if print_progress and log is None:
        log = _stderr
    done: list[CollectCall] = []
    shown = 0.0
    with contextlib.ExitStack() as stack:
        progress = _iterate(items, kw, settings, root, log, poll_seconds, done)
        stack.callback(progress.close)
        for p in progress:
            if print_progress and (time.monotonic() - shown > 0.1 or not p.new_stats):
                shown = time.monotonic()
                print(p.status_message, file=sys.stderr, flush=True)
            if progress_callback is not None:
                progress_callback(p)
    if not done:  # no tasks: nothing sampled (sinter would also return the files' rows)
        return []
    call = done[0]
    totals: dict[str, sinter.TaskStats] = {}
    for st in [*call.final_stats, *call.file_rows]:
        totals[st.strong_id] = totals[st.strong_id] + st if st.strong_id in totals else st
    return list(totals.values())


#: sinter's keywords that both functions pass on to the call, as given (one list: the two
#: functions must not drift apart).
_SINTER_KEYWORDS = ("num_workers", "max_shots", "max_errors", "decoders", "max_batch_seconds",
                    "max_batch_size", "start_batch_size", "count_observable_error_combos",
                    "count_detection_events", "custom_decoders", "custom_error_count_key",
                    "allowed_cpu_affinity_ids")


def _sinter_keywords(given: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`_SINTER_KEYWORDS` of a function's ``locals()`` (taken before any other)."""
    return {k: given[k] for k in _SINTER_KEYWORDS}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _tasks_and_root(tasks: Any) -> tuple[list[Any], pathlib.Path]:
    from qec_kiln._backends import kiln_home
    from qec_kiln._collect.call import materialize

    root = kiln_home() / "collect"
    root.mkdir(parents=True, exist_ok=True)
    return materialize(tasks), root


def _write_stats(data: Any, root: pathlib.Path) -> str:
    """``additional_existing_data`` (TaskStats, or a dict of them) as a sinter CSV."""
    import sinter

    stats = list(data.values()) if isinstance(data, Mapping) else list(getattr(data, "data", {})
                                                                       .values() or data)
    text = sinter.CSV_HEADER + "\n" + "".join(s.to_csv_line() + "\n" for s in stats)
    path = root / f"additional-{hashlib.sha256(text.encode()).hexdigest()[:16]}.csv"
    path.write_text(text)
    return str(path)


def _iterate(items: list[Any], kw: dict[str, Any], settings: dict[str, Any],
             root: pathlib.Path, log: Log | None, poll_seconds: float | None,
             done: list[CollectCall] | None) -> Generator[sinter.Progress, None, None]:
    """The generator behind both: plan and launch once, then yield the rows as they land;
    closed early, cancel the sweep. ``done`` receives the call, with ``final_stats``."""
    import sinter

    from qec_kiln._collect.call import CollectCall
    from qec_kiln._collect.run import Launch, raise_error
    from qec_kiln._command._main_cancel import cancel

    if not items:
        return
    call = CollectCall.build(items, kw, settings, root=root)
    poll = poll_seconds or (0.2 if call.local else 10.0)
    resume = open(call.resume_path, "a") if call.resume_path else None  # noqa: SIM115
    run = Launch(call.folder, call.settings, log, call.cpu_ids, call.local)
    watcher: FragmentWatcher | None = None
    end: dict[str, Any] | None = None
    completed = False
    closed = False  # the consumer closed the iteration or pressed Ctrl-C: cancel the sweep
    try:
        yield sinter.Progress(new_stats=(), status_message=f"Starting {kw['num_workers'] or 'the'} "
                              "workers...")
        run.start()
        idle = 0
        while True:
            for event in run.events(0 if run.finished else poll):
                if "error" in event:
                    raise_error(event)
                if "end" in event:
                    end = event["end"]
            # Locally the launch returned once its batches ended. A remote launch only
            # submitted: its jobs (this launch's, or an earlier one's still running when it
            # found "nothing to launch") are followed until every batch is done.
            ended = end is not None and (call.local or bool(
                end["failed"] or end["cancelled"] or end["interrupted"]))
            if end is not None and not ended:
                idle = _remote_done(end, idle, log)
                ended = idle < 0
            if watcher is None and run.sweep is not None:
                watcher = _watcher(call, run.sweep, run.old)
            if watcher is not None:  # after the check: the rows of a batch that just ended too
                rows = watcher.poll()
                if resume is not None and rows:
                    resume.write("".join(line + "\n" for line, _ in rows))
                    resume.flush()
                if rows:
                    yield sinter.Progress(new_stats=tuple(st for _, st in rows),
                                          status_message=watcher.status_message())
            if ended:
                break
            if end is not None:
                time.sleep(poll)
        assert end is not None
        _raise_for(end, watcher)
        completed = True
        if done is not None:
            ids = {sid for c, d, sid in end["tasks"] if (c, d) in call.wanted}
            call.final_stats = _final_stats(end["bucket"], ids)
            done.append(call)
    except (GeneratorExit, KeyboardInterrupt):
        closed = True
        raise
    finally:
        if not completed:
            bucket_url = str(end["bucket"] if end else call.settings.get("bucket") or
                             DEFAULT_BUCKET)
            if not run.finished:  # a local launch still running is this process's own child
                run.stop(lambda sweep: cancel(bucket_url, sweep))
            elif closed and not call.local:
                # Only the consumer's close or Ctrl-C cancels remote jobs (also those submitted
                # before a Ctrl-C cut the launch short, when ``end`` never came); an error of
                # this monitor leaves healthy jobs running: collecting again resumes them.
                sweep = end["sweep"] if end is not None else run.sweep
                if sweep is not None:
                    try:
                        cancel(bucket_url, sweep)
                    except KilnError as ex:
                        (log or _stderr)(f"warning: could not cancel sweep {sweep!r}: {ex}")
        run.close()
        if resume is not None:
            resume.close()


def _watcher(call: CollectCall, sweep: str, old: dict[str, int]) -> FragmentWatcher:
    from qec_kiln._collect.watch import FragmentWatcher
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest

    store = open_bucket(str(call.settings.get("bucket") or DEFAULT_BUCKET))
    return FragmentWatcher(store, load_manifest(store, sweep), old)


def _remote_done(end: dict[str, Any], idle: int, log: Log | None) -> int:
    """-1 when every batch of a remote sweep is done (by its fragments); raise when its jobs
    ended unfinished (three polls in a row in which the backend said no job is running or
    waiting); else the idle polls so far. A poll whose job states could not be read (a squeue
    timeout, an SDK failure) is not idle: it says so in the log and counts nothing."""
    from qec_kiln._backends import get_backend
    from qec_kiln._report.failures import batch_error
    from qec_kiln._report.status import sweep_progress
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest

    store = open_bucket(str(end["bucket"]))
    manifest = load_manifest(store, end["sweep"])
    backend = get_backend(manifest.backend)
    try:
        states: dict[Any, Any] | None = backend.job_states(store.url, end["sweep"])
    except KilnError as ex:
        states = None
        if log is not None:
            log(f"warning: could not read the jobs' states ({ex}); polling on")
    report = sweep_progress(store, manifest, states or {})
    if all(b.done for b in report.batches):
        return -1
    if states is None:
        return idle
    active = any(b.job is not None and b.job.active for b in report.batches)
    idle = 0 if active else idle + 1
    if idle >= 3:
        why = [f"{b}: {batch_error(store, end['sweep'], b) or 'no error line'}"
               for b in report.unfinished]
        raise KilnError(f"sweep {end['sweep']!r} ended unfinished ({'; '.join(why)}); "
                        "collect again to resume")
    return idle


def _raise_for(end: dict[str, Any], watcher: Any) -> None:
    """Raise as sinter would for a failed, cancelled or interrupted launch: the failing
    batch's tasks named, with the last error line of its log."""
    from qec_kiln._report.failures import batch_error

    if end["failed"]:
        lines = []
        for b in end["failed"]:
            what = ""
            if watcher is not None:
                m = watcher.manifest
                what = ", ".join(f"{m.circuit(s.circuit).metadata} ({s.decoder})"
                                 for s in m.plan.batch(b).shards)
            line = batch_error(watcher.bucket, end["sweep"], b) if watcher else None
            lines.append(f"batch {b} [{what}]: {line or end['message']}")
        raise KilnError(f"sweep {end['sweep']!r} failed: {'; '.join(lines)}; "
                        f"`qec-kiln status --bucket {end['bucket']} --sweep {end['sweep']}`")
    if end["interrupted"]:
        raise KeyboardInterrupt
    if end["cancelled"]:
        raise KilnError(f"sweep {end['sweep']!r} was cancelled; collect again to resume")


def _final_stats(bucket_url: str, ids: set[str]) -> list[sinter.TaskStats]:
    """Every row the bucket holds of the tasks ``ids`` (all its sweeps that hold one of them,
    as sinter counts a resume file), merged. Only those sweeps are read: a damaged fragment of
    an unrelated sweep must not drop (or fail) this call's rows; one of these sweeps' raises."""
    from qec_kiln._command._main_merge import merge
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import list_sweeps, load_manifest

    store = open_bucket(bucket_url)
    totals: dict[str, sinter.TaskStats] = {}
    for name in list_sweeps(store):  # none: nothing was sampled (the files' rows reached it all)
        if not any(t.get("strong_id") in ids for t in load_manifest(store, name).tasks):
            continue
        for st in merge(bucket_url, None, sweep=name).stats:
            if st.strong_id in ids:
                totals[st.strong_id] = totals[st.strong_id] + st if st.strong_id in totals else st
    return list(totals.values())


__all__ = ["collect", "iter_collect"]

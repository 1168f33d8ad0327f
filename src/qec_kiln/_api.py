"""The Python API: ``plan``, ``launch``, ``status``, ``merge`` and ``cancel``, one function per
``qec-kiln`` command, taking the same settings as keyword arguments (the CLI only parses flags and
calls these). Heavy modules (sinter, the storage clients, the backends, SkyPilot) load on the
first call that needs them, so ``import qec_kiln`` stays fast and a merge loads no backend.

A whole sweep, locally, on a tiny circuit:

    >>> import pathlib, tempfile, stim, qec_kiln
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> circuit = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...                                  after_clifford_depolarization=0.05)
    >>> _ = (tmp / "c").mkdir(), (tmp / "c" / "d=3,p=0.05.stim").write_text(str(circuit))
    >>> bucket = str(tmp / "bucket")
    >>> r = qec_kiln.launch(tmp / "c", max_shots=2000, max_errors=50, bucket=bucket, name="demo")
    >>> r.launched, r.failed
    (['b000'], [])
    >>> qec_kiln.status(bucket, sweep="demo")[0].fraction_done
    1.0
    >>> qec_kiln.merge(bucket, tmp / "merged.csv").rows
    1
    >>> qec_kiln.cancel(bucket, "demo")
    []
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._errors import KilnError, KilnWarning

if TYPE_CHECKING:
    from qec_kiln._launch_result import LaunchResult
    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.merge import MergeReport
    from qec_kiln._report.status import Relaunch, StatusReport

Log = Callable[[str], None]
PathLike = str | os.PathLike
Circuits = PathLike | Sequence[PathLike]  # a folder, or folders, .stim files and glob patterns


def quiet(line: str) -> None:
    """The API's default ``log``: progress lines are dropped; a ``warning: ...`` line (e.g.
    flags a stored plan ignores) becomes a :class:`KilnWarning`, so a script still sees it,
    attributed to the caller's line."""
    if line.startswith("warning: "):
        import warnings

        warnings.warn(line[len("warning: "):], KilnWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside this package (as 3.12's skip_file_prefixes)."""
    import sys
    import types

    here = os.path.dirname(__file__) + os.sep
    frame: types.FrameType | None = sys._getframe(2)  # quiet's caller
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def plan(circuits: Circuits, *, log: Log | None = None, **settings: Any) -> PlanResult:
    """Discover the ``.stim`` files under ``circuits`` (a folder, searched recursively, or a list
    of folders, ``.stim`` files and glob patterns, as ``sinter collect --circuits``) and balance
    them into batches; upload and start nothing (``qec-kiln plan``).

    ``settings`` are the flags of ``qec-kiln plan`` as keywords (``max_shots=10_000``,
    ``decoders=["pymatching"]``, ``jobs=4``, ``shards=False``, ``sinter_options=[...]``;
    ``SweepSpec.setting_names()`` lists them and ``inspect.signature`` shows their defaults).
    ``jobs``, ``target_hours`` or ``circuits_per_job`` pick the number of batches (default: from
    the backend). ``backend_options`` are the backend's settings, e.g. ``{"processes": 4}`` or
    ``{"partition": "long"}`` for Slurm. When the sweep (``name``, default: the folder name
    and a digest of the inputs) is already in ``bucket``, its stored plan is returned (with a
    warning naming the settings it ignores). ``log`` receives progress and warning lines; without
    it, warnings are issued as :class:`KilnWarning` (a ``UserWarning``).

        >>> import pathlib, tempfile, stim, qec_kiln
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> for d in (3, 5):
        ...     c = stim.Circuit.generated("repetition_code:memory", distance=d, rounds=d,
        ...                                after_clifford_depolarization=0.01)
        ...     _ = (tmp / f"d={d}.stim").write_text(str(c))
        >>> p = qec_kiln.plan(tmp, max_shots=10_000, bucket=str(tmp / "bucket"), jobs=2)
        >>> len(p.batches), p.exists, sorted(p.to_json())[:3]
        (2, False, ['balance_ratio', 'batches', 'batches_at_once'])
    """
    from qec_kiln._prepare import plan_only

    return plan_only(circuits, settings, log or quiet)


def launch(circuits: Circuits, *, dry_run: bool = False, log: Log | None = None,
           before_start: Callable[[PlanResult, list[str], Relaunch | None], None] | None = None,
           **settings: Any) -> LaunchResult:
    """Plan (as :func:`plan`, with the same ``settings``), upload the circuits and the manifest,
    and start every batch that is neither finished nor running (``qec-kiln launch``).
    Idempotent: the same call again starts only what is left. The local backend runs the
    batches before returning; the others submit jobs and return. ``before_start(plan,
    batch_ids, relaunch)`` is called just before anything starts (the CLI prints the plan
    there). ``dry_run`` uploads and starts nothing.

        >>> import pathlib, tempfile, stim, qec_kiln
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
        ...                            after_clifford_depolarization=0.01)
        >>> _ = (tmp / "d=3.stim").write_text(str(c))
        >>> r = qec_kiln.launch(tmp, bucket=str(tmp / "bucket"), backend="slurm",
        ...                     backend_options={"partition": "long"}, dry_run=True)
        >>> r.launched, "#SBATCH --partition=long" in r.dry_run.description
        ([], True)
    """
    import sys

    from qec_kiln._prepare import launch_sweep

    # The backend's lines (progress, failures) go to the caller's log; without one only its
    # warnings are issued. A live table where a caller's lines reach a terminal anyway.
    live = log is not None and log is not quiet and sys.stderr.isatty()
    return launch_sweep(circuits, settings, dry_run=dry_run, log=log or quiet, live=live,
                        before_start=before_start)


def _with_settings_signature(func: Callable[..., Any]) -> None:
    """Show every setting with its default in ``help()`` and ``inspect.signature``."""
    import inspect

    from qec_kiln._sweep.spec import SweepSpec

    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in SweepSpec.defaults().items()]
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]


_with_settings_signature(plan)
_with_settings_signature(launch)


def status(bucket: PathLike = "kiln-results", *, sweep: str | None = None,
           backend: str | None = None, log: Log | None = None) -> list[StatusReport]:
    """Progress of each sweep in ``bucket`` (or only ``sweep``), one ``StatusReport`` per sweep:
    the fragments against the plan's targets, joined with the backend's job states
    (``qec-kiln status``). ``backend`` defaults to the one the sweep was launched with. What the
    backend could not find out is in ``report.backend_warnings`` (and sent to ``log``).

        >>> import tempfile, qec_kiln
        >>> qec_kiln.status(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: ...: no sweeps in this bucket; ...
    """
    from qec_kiln._backends import get_backend
    from qec_kiln._report.status import sweep_progress
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest, resolve_sweep

    log = log or quiet
    store = open_bucket(str(bucket))  # only read: a read-only bucket is fine
    reports = []
    for name in resolve_sweep(store, sweep, lambda w: log(f"warning: {w}")):
        manifest = load_manifest(store, name)
        chosen = get_backend(backend or manifest.backend)
        try:
            states = chosen.job_states(store.url, name)
        except KilnError as ex:
            log(f"warning: {ex}; showing fragment progress only")
            states = {}
        report = sweep_progress(store, manifest, states)
        _prefer_live(report, chosen.live_fragments(store.url, name))
        report.backend = chosen.name
        report.backend_warnings = chosen.warnings()
        for w in report.backend_warnings:
            log(f"warning: {w}")
        reports.append(report)
    return reports


def _prefer_live(report: StatusReport, live: Mapping[str, bytes]) -> None:
    """Use a batch's local resume file (parsed by sinter) where it holds more shots than the
    fragment in the bucket (it is synced only every ``sync_seconds``)."""
    from qec_kiln._report.status import batch_progress
    from qec_kiln._sweep.fragments import Fragment, parse_fragment

    parsed: dict[bytes, Fragment | None] = {}  # one run-batch --all: one file, many batches
    for bp in report.batches:
        data = live.get(bp.batch.id)
        if not data or bp.problem:
            continue
        if data not in parsed:
            try:
                parsed[data] = parse_fragment(data, bp.batch.id)
            except KilnError:
                parsed[data] = None
        fragment = parsed[data]
        if fragment is None:
            continue
        shards = batch_progress(bp.batch, fragment, report.manifest.errors_of)
        if sum(s.shots for s in shards) > bp.shots:
            bp.shards, bp.fragment_found = shards, True


def sweep_names(bucket: PathLike = "kiln-results") -> list[str]:
    """The sweeps in ``bucket`` (what ``status`` and ``cancel`` without a sweep act on)."""
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import resolve_sweep

    return resolve_sweep(open_bucket(str(bucket)), None)


def merge(bucket: PathLike = "kiln-results", out: PathLike | None = "merged.csv", *,
          sweep: str | None = None, skip_bad: bool = False, log: Log | None = None
          ) -> MergeReport:
    """Combine every batch's fragment (of ``sweep``, or of every sweep in ``bucket``) with
    ``sinter combine`` into the CSV ``out`` for ``sinter plot`` (``qec-kiln merge``).
    ``skip_bad`` skips damaged fragments with a warning instead of stopping. The report counts
    rows and the tasks that reached their targets; ``report.stats`` holds the merged rows as
    ``sinter.TaskStats`` (what ``sinter.collect`` returns). ``out=None`` writes nothing.
    Example: see the module docstring above.
    """
    from qec_kiln._report.merge import merge_sweeps

    # Without a log, merge's warnings are in the report (MergeReport.warnings), not raised.
    return merge_sweeps(str(bucket), None if out is None else str(out), sweep=sweep,
                        skip_bad=skip_bad, log=log)


def cancel(bucket: PathLike = "kiln-results", sweep: str = "", *,
           backend: str | None = None) -> list[str]:
    """Stop every job of ``sweep`` (``qec-kiln cancel``); fragments are kept, so a later
    :func:`launch` resumes. Returns the jobs it stopped ([] when none was running or waiting):
    job ids, or for the local backend the batch ids, running or still waiting in a launch."""
    from qec_kiln._backends import get_backend
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest

    if not sweep:
        raise KilnError("cancel needs the sweep's name: --sweep NAME")
    store = open_bucket(str(bucket))
    manifest = load_manifest(store, sweep)
    return get_backend(backend or manifest.backend).cancel(store.url, manifest.sweep)


def remove(bucket: PathLike, sweep: str, *, dry_run: bool = False,
           backend: str | None = None) -> list[str]:
    """Delete every object of ``sweep`` from ``bucket`` (manifest, circuits, fragments, leases,
    logs) and return their keys; ``dry_run`` only lists them (``qec-kiln remove``). Refused while
    a batch of it runs (by the backend's job states or a live lease): cancel it first.

        >>> import tempfile, qec_kiln
        >>> qec_kiln.remove(tempfile.mkdtemp(), "nope")
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: ...nope: no such sweep in the bucket (nothing to remove); ...
    """
    from qec_kiln._backends import get_backend
    from qec_kiln._report.remove import remove_sweep
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest, manifest_key

    if not sweep:
        raise KilnError("remove needs the sweep's name: --sweep NAME")
    store = open_bucket(str(bucket))
    active: dict[str, str] = {}
    if store.exists(manifest_key(sweep)):
        manifest = load_manifest(store, sweep)
        states = get_backend(backend or manifest.backend).job_states(store.url, sweep)
        active = {b: j.state for b, j in states.items() if j.active}
    return remove_sweep(store, sweep, active, dry_run=dry_run)


__all__ = ["cancel", "launch", "merge", "plan", "remove", "status"]

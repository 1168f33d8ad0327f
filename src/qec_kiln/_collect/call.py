"""One ``qec_kiln.collect``/``iter_collect`` call as a sweep: sinter's keywords turned into the
settings of :func:`qec_kiln.launch`, checked before anything is written to a bucket.

Each task's targets are sinter's: its own ``collection_options`` combined with the call's
(``CollectionOptions.combine``, the smaller of each), per circuit and decoder
(``Targets.task_targets``); a task that names its decoder runs with that one only. Rows of
``save_resume_filepath`` and ``existing_data_filepaths`` count toward the targets as sinter
counts them, except the rows the bucket already holds (the resume file of an earlier call
repeats them).

    >>> import pathlib, tempfile, stim, sinter
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
    ...                            after_clifford_depolarization=0.01)
    >>> t = sinter.Task(circuit=c, json_metadata={"d": 3},
    ...                 collection_options=sinter.CollectionOptions(max_shots=50))
    >>> call = CollectCall.build([t], dict(num_workers=1, max_shots=100, max_errors=None,
    ...     decoders=["pymatching"]), {}, root=pathlib.Path(tempfile.mkdtemp()))
    >>> call.settings["max_shots"], call.settings["task_targets"] is None, call.local
    (50, True, True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import sinter
import stim

from qec_kiln._errors import KilnError
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.existing import csv_rows
from qec_kiln._sweep.fragments import complete_lines
from qec_kiln._sweep.memory import task_circuit, write_tasks
from qec_kiln._sweep.postselect import Postselection
from qec_kiln._sweep.spec import BATCH_OPTIONS, BatchOptions, TaskTarget

#: A target sinter leaves unlimited (``max_shots=None`` or ``max_errors=None``): more than any
#: sweep reaches, so the other target stops the task.
UNLIMITED = 10**15


def sort_keys(metadata: Any) -> str:
    """A task's json_metadata as sinter's CSV writes it (keys sorted), for matching rows."""
    return json.dumps(metadata, sort_keys=True)


@dataclasses.dataclass
class CollectCall:
    """What a call runs: the circuits' folder, :func:`qec_kiln.launch`'s settings, and what
    it reads and writes besides the bucket."""

    folder: pathlib.Path
    settings: dict[str, Any]
    local: bool
    cpu_ids: tuple[int, ...] | None
    #: (circuit key, decoder) of every task the call runs (as sinter expands ``decoders``).
    wanted: set[tuple[str, str]]
    resume_path: pathlib.Path | None
    #: Rows of the resume and existing-data files not in the bucket: sinter returns them.
    file_rows: list[sinter.TaskStats]
    #: Once the sweep ended: the bucket's rows of the call's tasks.
    final_stats: list[sinter.TaskStats] = dataclasses.field(default_factory=list)

    @classmethod
    def build(cls, items: Sequence[Any], sinter_kw: Mapping[str, Any],
              settings: Mapping[str, Any], *, root: pathlib.Path) -> CollectCall:
        """Check sinter's keywords (``sinter_kw``) and qec-kiln's ``settings``, write the
        tasks' circuits under ``root``, and read the resume and existing-data files."""
        from qec_kiln._backends import backend_class
        from qec_kiln._sweep.spec import SweepSpec

        SweepSpec.check_setting_names(settings)  # a misspelt setting: refused before any write
        settings = dict(settings)
        backend = settings.get("backend") or "local"
        # The backend whose batches run here (and whose launch returns once they ended).
        local = bool(backend_class(backend).decoders_run_here)
        decoders = sinter_kw.get("decoders")
        decoders = [decoders] if isinstance(decoders, str) else list(decoders or [])
        call_opts = sinter.CollectionOptions(
            max_shots=sinter_kw.get("max_shots"), max_errors=sinter_kw.get("max_errors"),
            **{k: sinter_kw.get(k) for k in BATCH_OPTIONS})
        post = Postselection(settings.get("postselected_detectors_predicate"),
                             settings.get("postselected_observables_predicate"),
                             bool(settings.get("postselect_detectors_with_non_zero_4th_coord")))
        written = write_tasks(items, root)
        own_decoders = written.decoders
        all_decoders = list(dict.fromkeys(decoders + own_decoders)) or ["pymatching"]
        targets: dict[str, dict[str, tuple[int, int]]] = {}
        batch: dict[str, dict[str, BatchOptions]] = {}  # each task's combined batch options
        for i, (item, name) in enumerate(zip(items, written.names, strict=True)):
            task = item if isinstance(item, sinter.Task) else sinter.Task(circuit=item)
            mine = [task.decoder] if task.decoder else (decoders or ["pymatching"])
            opts = task.collection_options.combine(call_opts)
            if opts.max_shots is None and opts.max_errors is None:
                raise ValueError(f"task {i}: neither max_shots nor max_errors is set (by the call "
                                 "or the task's collection_options): it would never stop")
            goal = (UNLIMITED if opts.max_shots is None else int(opts.max_shots),
                    UNLIMITED if opts.max_errors is None else int(opts.max_errors))
            own = _batch_options(opts, i)
            _check_own_model(task, i, post)
            for d in mine:
                had = targets.setdefault(name, {}).get(d)
                if had is not None and (had, batch[name][d]) != (goal, own):
                    raise KilnError(f"task {i}: the same circuit, metadata and decoder {d!r} as an "
                                    f"earlier task, with other targets or batch options "
                                    f"{(*had, *batch[name][d])} vs {(*goal, *own)}; give it once")
                targets[name][d] = goal
                batch.setdefault(name, {})[d] = own
        wanted = {(n, d) for n, per in targets.items() for d in per}
        goals = {g for per in targets.values() for g in per.values()}
        # sinter honours each task's batch options: one set for every task goes to every
        # sinter as flags (the sweep's); else each task's ride in its record to its shards,
        # and the node runs tasks of other options in sinters of their own (sinter_runs).
        options = {o for per in batch.values() for o in per.values()}
        per_task = len(options) > 1
        uniform = (len(goals) == 1 and len(wanted) == len(targets) * len(all_decoders)
                   and not per_task)
        shots = max(g[0] for g in goals)
        errors = max(g[1] for g in goals)
        task_targets: dict[str, dict[str, TaskTarget]] | None = None
        if not uniform:  # a circuit's decoders it does not run: (0, 0), left out of the plan
            task_targets = {n: {d: ((*per[d], *batch[n][d]) if per_task else per[d])
                                if d in per else (0, 0) for d in all_decoders}
                            for n, per in targets.items()}
        settings.update(decoders=all_decoders, max_shots=shots, max_errors=errors,
                        task_targets=task_targets)
        extra = list(settings.get("sinter_options") or [])
        if not per_task:
            for k, v in zip(BATCH_OPTIONS, next(iter(options)), strict=True):
                if v is not None:
                    extra.append(f"--{k}={int(v)}")
        for k in ("count_observable_error_combos", "count_detection_events"):
            if sinter_kw.get(k):
                extra.append(f"--{k}")
        settings["sinter_options"] = extra or None
        if sinter_kw.get("custom_error_count_key") is not None:
            settings["custom_error_count_key"] = sinter_kw["custom_error_count_key"]
        if sinter_kw.get("custom_decoders") is not None:  # shipped by the plan/launch core
            settings["custom_decoders"] = sinter_kw["custom_decoders"]
        cpu_ids = sinter_kw.get("allowed_cpu_affinity_ids")
        if cpu_ids is not None and not local:
            raise KilnError(f"allowed_cpu_affinity_ids: CPUs of this machine mean nothing on a "
                            f"{backend} node (each batch is pinned to the CPUs its node gives "
                            "it); leave it out")
        settings["backend_options"] = _backend_options(settings.get("backend_options"),
                                                       sinter_kw.get("num_workers"), local)
        call = cls(written.folder, settings, local,
                   tuple(int(c) for c in cpu_ids) if cpu_ids is not None else None,
                   wanted, None, [])
        call._read_files(sinter_kw, items, root)
        return call

    def _read_files(self, sinter_kw: Mapping[str, Any], items: Sequence[Any],
                    root: pathlib.Path) -> None:
        """sinter's ``save_resume_filepath`` and ``existing_data_filepaths``: their rows that
        the bucket does not hold count toward the targets (an --existing-data file) and are
        returned; the resume file is created with sinter's header if missing."""
        paths = [pathlib.Path(p) for p in sinter_kw.get("existing_data_filepaths") or ()]
        resume = sinter_kw.get("save_resume_filepath")
        if resume is not None:
            resume = pathlib.Path(resume)
            if resume in paths:
                raise ValueError("save_resume_filepath in existing_data_filepaths")
            if resume.exists():
                _cut_torn_line(resume)
                paths.append(resume)
            else:
                resume.parent.mkdir(parents=True, exist_ok=True)
                resume.write_text(sinter.CSV_HEADER + "\n")
            self.resume_path = resume
        rows: list[tuple[str, sinter.TaskStats]] = []
        for p in paths:
            try:
                rows += csv_rows(p.read_text())
            except (OSError, ValueError) as ex:
                raise ValueError(f"{p}: not a readable sinter CSV ({ex})") from None
        if not rows:
            return
        held = _bucket_lines(self.settings.get("bucket"))
        fresh = [(line, st) for line, st in rows if line.rstrip() not in held]
        self.file_rows = [st for _, st in fresh]
        tasks = {(sort_keys(t.json_metadata), d) for t in items if isinstance(t, sinter.Task)
                 for d in ([t.decoder] if t.decoder else self.settings["decoders"])}
        mine = [line for line, st in fresh if (sort_keys(st.json_metadata), st.decoder) in tasks]
        if mine:  # one CSV, named by its rows: the same rows give the same sweep name
            text = sinter.CSV_HEADER + "\n" + "\n".join(mine) + "\n"
            path = root / f"existing-{hashlib.sha256(text.encode()).hexdigest()[:16]}.csv"
            path.write_text(text)
            self.settings["existing_data"] = [*(self.settings.get("existing_data") or ()), str(path)]


def _cut_torn_line(path: pathlib.Path) -> None:
    """Cut a resume file back to its last newline: a last line without one was torn by an
    interrupted write, and the rows appended after it would be glued to it."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(complete_lines(data) or (sinter.CSV_HEADER + "\n").encode())


def _backend_options(given: Any, num_workers: int | None, local: bool) -> Any:
    """The backend's options with sinter's ``num_workers`` as its ``processes`` (per batch:
    on the local backend, this machine's; on a remote one, per node) unless given; locally,
    fragments synced every second, so progress reaches the caller as sinter's does, unless
    the caller gave ``sync_seconds`` or an options object.

    >>> from qec_kiln._backends.options import BackendOptions
    >>> o = _backend_options(BackendOptions(sync_seconds=30.0), 2, True)
    >>> (o.processes, o.sync_seconds)
    (2, 30.0)
    >>> _backend_options({"sync_seconds": 30.0}, 2, True)
    {'processes': 2, 'sync_seconds': 30.0}
    """
    changes: dict[str, Any] = {}
    if num_workers is not None:
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers={num_workers!r}: give a positive integer")
        changes["processes"] = num_workers
    if local:
        changes["sync_seconds"] = 1.0
    if given is None:
        return changes
    if isinstance(given, Mapping):
        return {**changes, **given}
    # An options object cannot tell an explicit value from its default (sync_seconds=30 is
    # both): only what it leaves unset (None) is filled; its sync_seconds is the caller's.
    mine = {k: v for k, v in changes.items() if k != "sync_seconds" and getattr(given, k) is None}
    return dataclasses.replace(given, **mine)


def _batch_options(opts: sinter.CollectionOptions, i: int) -> BatchOptions:
    """A task's combined sinter batch options, refused in one line where sinter's flags cannot
    carry them (not a positive whole number).

    >>> _batch_options(sinter.CollectionOptions(max_batch_size=64), 0)
    (None, 64, None)
    """
    out: list[int | None] = []
    for k in BATCH_OPTIONS:
        v = getattr(opts, k)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"task {i}: {k}={v!r}: give a positive integer (or leave it out)")
        out.append(None if v is None else int(v))
    return out[0], out[1], out[2]


def _check_own_model(task: sinter.Task, i: int, post: Postselection) -> None:
    """A task's own detector_error_model and postselection masks must be those the nodes'
    ``sinter collect`` builds (else they would sample another task): refused by name."""
    import numpy as np

    if task.detector_error_model is None and task.postselection_mask is None and \
            task.postselected_observables_mask is None:
        return
    circuit = task_circuit(task, i)
    built = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    masks = post.masks(circuit, task.json_metadata) if post.active else (None, None)

    def same(a: Any, b: Any) -> bool:
        return (a is None) == (b is None) and (a is None or np.array_equal(a, b))

    if ((task.detector_error_model is not None and task.detector_error_model != built)
            or not same(task.postselection_mask, masks[0])
            or not same(task.postselected_observables_mask, masks[1])):
        raise KilnError(
            f"task {i}: its detector_error_model or postselection masks are not the ones "
            "sinter collect builds from its circuit and the postselection settings, so "
            "the nodes would sample another task; drop them (give the postselection as "
            "postselected_detectors_predicate=...)")


def _bucket_lines(bucket_url: str | None) -> set[str]:
    """Every row line of every fragment in the bucket (to recognise rows it already holds).
    A bucket that does not exist yet holds none (a local one lists empty); any other failure
    to read it raises: the resume file's copies of its rows would otherwise count twice."""
    from qec_kiln._argtypes import DEFAULT_BUCKET
    from qec_kiln._errors import ObjectNotFound, StorageError

    url = os.fspath(bucket_url or DEFAULT_BUCKET)
    lines: set[str] = set()
    try:
        bucket = open_bucket(url)
        for k in bucket.list_keys(""):
            if "/fragments/" not in k or not k.endswith(".csv"):
                continue
            try:
                data = bucket.read_bytes(k)
            except ObjectNotFound:  # deleted since it was listed: no rows to recognise
                continue
            lines.update(x.rstrip() for x in data.decode("utf-8", "replace").splitlines()[1:])
    except (StorageError, OSError) as ex:
        raise KilnError(f"{url}: cannot read the bucket's rows to tell the resume and "
                        f"existing-data files' own rows from its copies ({ex})") from None
    return lines


def materialize(tasks: Any) -> list[Any]:
    """``tasks`` as a list (sinter takes lists, generators, one task)."""
    if isinstance(tasks, sinter.Task | stim.Circuit):
        return [tasks]
    if isinstance(tasks, str | os.PathLike):
        raise KilnError("tasks: give sinter.Task objects (for .stim files and folders use "
                        "qec_kiln.launch)")
    return list(tasks)


__all__ = ["UNLIMITED", "CollectCall", "materialize", "sort_keys"]

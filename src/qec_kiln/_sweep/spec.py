"""A sweep's settings, in one frozen ``SweepSpec``: what ``qec-kiln plan``/``launch`` and
``qec_kiln.plan``/``launch`` are asked for. Every setting has one name: the API's keyword, the
field here, and the flag (dashes for underscores: ``max_shots`` is ``--max-shots``).

    >>> spec = SweepSpec.build("circuits/", {"max_shots": 10_000, "jobs": 2})
    >>> spec.targets.max_shots, spec.partition.jobs, spec.inputs.decoders
    (10000, 2, ('pymatching',))
    >>> SweepSpec.build("c/", {"max_shot": 1})
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: unknown setting 'max_shot'; the settings are: ...

Adding a setting is a field in one of the groups below plus its flag in
``_command/_main_plan.add_sweep_arguments``; only :data:`API_ONLY` settings (Python objects) have
no flag.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._argtypes import DEFAULT_BUCKET
from qec_kiln._argtypes import sinter_options as check_sinter_options
from qec_kiln._errors import KilnError
from qec_kiln._sweep.postselect import Postselection
from qec_kiln._sweep.shipped import check_objects

if TYPE_CHECKING:  # a backend's options: the backend normalises them (Backend.options)
    from qec_kiln._backends.options import BackendOptions

@dataclasses.dataclass(frozen=True)
class Inputs:
    """What is sampled: the circuits (folders, ``.stim`` files, glob patterns) and decoders."""

    circuits: tuple[str, ...] = ()
    decoders: tuple[str, ...] = ("pymatching",)
    custom_decoders_module_function: str | None = None  # sinter's, e.g. chromobius:sinter_decoders
    # sinter.collect's: {name: sinter.Decoder | sinter.Sampler}, shipped to the nodes pickled
    # (_sweep/shipped.py); not with custom_decoders_module_function. API only: objects, no flag.
    custom_decoders: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)
    sinter_options: tuple[str, ...] = ()  # sinter collect's argv words (--sinter-option, checked)
    # sinter's postselection (part of each task's strong_id, computed here as sinter does)
    postselected_detectors_predicate: str | None = None  # e.g. "coords[3] > 0"
    postselected_observables_predicate: str | None = None  # e.g. "index >= 1"
    postselect_detectors_with_non_zero_4th_coord: bool = False

    @property
    def postselection(self) -> Postselection:
        """The postselection flags as one value (``Postselection.masks`` gives sinter's masks)."""
        return Postselection(self.postselected_detectors_predicate,
                             self.postselected_observables_predicate,
                             self.postselect_detectors_with_non_zero_4th_coord)

    def sinter_args(self, custom_error_count_key: str | None = None) -> list[str]:
        """The words every ``sinter collect`` of the sweep gets after qec-kiln's own.

        >>> Inputs(postselected_detectors_predicate="coords[2] == 0").sinter_args("k")
        ['--postselected_detectors_predicate', 'coords[2] == 0', '--custom_error_count_key', 'k']
        """
        key = ["--custom_error_count_key", custom_error_count_key] if custom_error_count_key else []
        return list(self.sinter_options) + self.postselection.sinter_args() + key


#: sinter's batch-size options, in the order a per-task record (``Targets.task_targets``) and a
#: shard (``Shard.batch_options``) hold them.
BATCH_OPTIONS = ("start_batch_size", "max_batch_size", "max_batch_seconds")

#: (start_batch_size, max_batch_size, max_batch_seconds); None: sinter's default.
BatchOptions = tuple[int | None, int | None, int | None]

#: (max_shots, max_errors), or (max_shots, max_errors, *BatchOptions).
TaskTarget = tuple[int | None, ...]


def batch_options(values: Sequence[Any]) -> BatchOptions:
    """Three batch options (ints or None) from a record's tail, refused in one line if malformed.

    >>> batch_options([None, "64", 2])
    (None, 64, 2)
    >>> batch_options([1, 2])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: batch options [1, 2]: give [start_batch_size, max_batch_size, ...
    """
    values = list(values)
    try:
        ok = len(values) == 3 and all(v is None or int(v) > 0 for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"batch options {values}: give [start_batch_size, max_batch_size, "
                         "max_batch_seconds] (each a positive integer or null)")
    a, b, c = (None if v is None else int(v) for v in values)
    return a, b, c


@dataclasses.dataclass(frozen=True)
class Targets:
    """Per task (circuit x decoder): stop at ``max_shots`` shots or ``max_errors`` errors,
    counting what the bucket already holds of the task (any sweep of it) and the rows of
    ``existing_data`` CSVs, as ``sinter collect`` counts its resume file and
    ``--existing_data_filepaths``. ``merge_existing_data``: also import those CSVs into the
    bucket (once), so ``merge`` includes them. ``fresh``: count nothing; refused where the
    bucket holds rows of these tasks (a merge would add them)."""

    max_shots: int = 1_000_000
    max_errors: int = 1000
    existing_data: tuple[str, ...] = ()
    merge_existing_data: bool = False
    fresh: bool = False
    custom_error_count_key: str | None = None  # max_errors counts this custom count (sinter's)
    #: API only (``qec_kiln.collect``'s per-task ``collection_options`` and decoders): circuit
    #: key -> decoder -> (max_shots, max_errors) of that task instead of the two above; (0, 0)
    #: leaves the task out (a task that names its own decoder runs with no other). A record may
    #: carry the task's own sinter batch options too, (max_shots, max_errors,
    #: start_batch_size, max_batch_size, max_batch_seconds) (None: sinter's default), which its
    #: shards' ``sinter collect`` gets as flags (:data:`BATCH_OPTIONS`).
    task_targets: Mapping[str, Mapping[str, TaskTarget]] | None = None

    def by_strong_id(self, strong_ids: Mapping[tuple[str, str], str]) -> dict[str, tuple[int, int]]:
        """``task_targets`` keyed by strong_id (``strong_ids``: (circuit key, decoder) -> id).

        >>> Targets(task_targets={"a.stim": {"x": (10, 1)}}).by_strong_id({("a.stim", "x"): "id"})
        {'id': (10, 1)}
        """
        own = self.task_targets or {}
        return {sid: (int(own[key][decoder][0]), int(own[key][decoder][1]))  # type: ignore[arg-type]
                for (key, decoder), sid in strong_ids.items()
                if decoder in own.get(key, {})}

    def batch_options_by_strong_id(
            self, strong_ids: Mapping[tuple[str, str], str]) -> dict[str, BatchOptions]:
        """The batch options ``task_targets`` gives a task, keyed by strong_id (tasks without
        them are left out).

        >>> t = Targets(task_targets={"a.stim": {"x": (10, 1, None, 64, None), "y": (10, 1)}})
        >>> t.batch_options_by_strong_id({("a.stim", "x"): "ix", ("a.stim", "y"): "iy"})
        {'ix': (None, 64, None)}
        """
        own = self.task_targets or {}
        out: dict[str, BatchOptions] = {}
        for (key, decoder), sid in strong_ids.items():
            record = own.get(key, {}).get(decoder)
            if record is not None and len(record) > 2:
                out[sid] = batch_options(record[2:])
        return out


@dataclasses.dataclass(frozen=True)
class Partition:
    """How the tasks become batches (at most one of jobs, target_hours, circuits_per_job)."""

    jobs: int | None = None
    target_hours: float | None = None
    circuits_per_job: int | None = None
    shards: bool = True  # split a big task's shots over several batches (--no-shards: never)
    calibrate: bool = False  # time a short pilot of every task here first
    calibrate_seconds: float = 60.0

    @property
    def is_default(self) -> bool:
        """None of jobs, target_hours, circuits_per_job: the planner chooses the batch count."""
        return self.jobs is None and self.target_hours is None and self.circuits_per_job is None


@dataclasses.dataclass(frozen=True)
class Pricing:
    """Prices for a cost estimate (any currency)."""

    price_per_cpu_hour: float | None = None
    price_per_gpu_hour: float | None = None


#: Settings of the Python API that no flag can spell (Python objects).
API_ONLY = frozenset({"custom_decoders"})

#: The groups of a SweepSpec and their types; a setting's name is its field's name.
GROUPS: dict[str, type] = {"inputs": Inputs, "targets": Targets, "partition": Partition,
                           "pricing": Pricing}


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep is asked for, grouped; built once by :meth:`build`."""

    inputs: Inputs
    targets: Targets = Targets()
    partition: Partition = Partition()
    pricing: Pricing = Pricing()
    bucket: str = DEFAULT_BUCKET  # s3://B[/P], gs://B[/P] or a directory
    name: str | None = None  # default: the folder's name and a digest of the inputs
    backend: str = "local"
    backend_options: BackendOptions | Mapping[str, Any] | None = None  # the backend's default

    @staticmethod
    def setting_names() -> list[str]:
        """Every setting's name (the API's keywords; the flags are these with dashes)."""
        names = [f.name for group in GROUPS.values() for f in dataclasses.fields(group)]
        return [n for n in names if n != "circuits"] + ["bucket", "name", "backend",
                                                         "backend_options"]

    @staticmethod
    def defaults() -> dict[str, Any]:
        """Each setting's default (for signatures and help texts)."""
        out = {f.name: f.default for group in GROUPS.values() for f in dataclasses.fields(group)}
        out.pop("circuits")
        top = {f.name: f.default for f in dataclasses.fields(SweepSpec) if f.name not in GROUPS}
        return {**out, **top, "backend_options": None}

    @classmethod
    def build(cls, circuits: Any, settings: Mapping[str, Any]) -> SweepSpec:
        """The spec from ``circuits`` and flat ``settings`` (names as :meth:`setting_names`);
        absent or None settings take their defaults. ``backend_options`` is kept as given: the
        backend normalises it (``Backend.options``)."""
        cls.check_setting_names(settings)
        given = {k: v for k, v in settings.items() if v is not None}
        paths = ([os.fspath(circuits)] if isinstance(circuits, str | os.PathLike)
                 else [os.fspath(c) for c in circuits])
        if not paths:
            raise KilnError("no circuits given: pass a folder of .stim files, or .stim files")
        for key in ("decoders", "sinter_options", "existing_data"):
            if isinstance(given.get(key), str | os.PathLike):
                given[key] = [given[key]]
            if key in given:
                given[key] = tuple(os.fspath(v) if isinstance(v, os.PathLike) else v
                                   for v in given[key])
        if "custom_decoders" in given:
            given["custom_decoders"] = check_objects(given["custom_decoders"])
        if "sinter_options" in given:  # checked, as the argv words sinter collect receives
            given["sinter_options"] = tuple(check_sinter_options(given["sinter_options"]))
        groups = {}
        for group_name, group in GROUPS.items():
            fields = {f.name for f in dataclasses.fields(group)}
            groups[group_name] = group(**{k: v for k, v in given.items() if k in fields})
        groups["inputs"] = dataclasses.replace(groups["inputs"], circuits=tuple(paths))
        top = {k: given[k] for k in ("name", "backend", "backend_options") if k in given}
        return cls(**groups, **top, bucket=cls.bucket_of(settings))

    @classmethod
    def check_setting_names(cls, settings: Mapping[str, Any]) -> None:
        """Refuse a setting that is not one of :meth:`setting_names`.

        >>> SweepSpec.check_setting_names({"max_shot": 10})
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: unknown setting 'max_shot'; the settings are: ...
        """
        known = set(cls.setting_names())
        unknown = sorted(set(settings) - known)
        if unknown:
            raise KilnError(f"unknown setting {unknown[0]!r}; the settings are: "
                            f"{', '.join(sorted(known))}")

    @staticmethod
    def bucket_of(settings: Mapping[str, Any]) -> str:
        """The bucket the settings name (a path given as a ``PathLike`` too), or the default.

        >>> SweepSpec.bucket_of({}), SweepSpec.bucket_of({"bucket": None})
        ('kiln-results', 'kiln-results')
        """
        bucket = settings.get("bucket")
        return DEFAULT_BUCKET if bucket is None else os.fspath(bucket)

    @property
    def circuits(self) -> str | list[str]:
        """The circuits as given: one path, or several."""
        paths = list(self.inputs.circuits)
        return paths[0] if len(paths) == 1 else paths


def default_sweep_name(folder: str | list[str], digest: str) -> str:
    """``<folder>-<8 hex of the inputs digest>``: the same inputs give the same sweep (idempotent).
    Several inputs (files, folders, patterns) are named after their common folder, whatever
    their order.

    >>> default_sweep_name("circuits/", "0123456789abcdef")
    'circuits-01234567'
    >>> default_sweep_name(["c/d=5.stim", "c/d=3.stim"], "01234567ab")
    'c-01234567'
    """
    if isinstance(folder, list) or pathlib.Path(folder).is_file() or glob.has_magic(folder):
        folder = [folder] if isinstance(folder, str) else folder
        dirs = [p if p.is_dir() else p.parent
                for p in (pathlib.Path(f.rstrip("/")).resolve() for f in folder)]
        folder = os.path.commonpath([str(d) for d in dirs])
    base = pathlib.Path(folder.rstrip("/")).resolve().name or "sweep"
    base = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in base).strip("-._") or "sweep"
    return f"{base[:40]}-{digest[:8]}"

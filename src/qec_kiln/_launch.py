"""``qec-kiln plan`` and ``qec-kiln launch``: discover → plan → upload → start the batches.

A sweep is identified by its name in a bucket. Launching is idempotent: if the sweep's manifest
already exists with the same inputs, its stored plan is reused and only batches that are neither
finished (by their fragments) nor running (by the backend) are started again.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib
import os
import pathlib
from collections.abc import Callable

import sinter

from qec_kiln._backends import Backend, BackendOptions, LaunchRequest, get_backend
from qec_kiln._errors import KilnError, ObjectNotFound, PreconditionFailed
from qec_kiln._planning._cost import estimate_costs
from qec_kiln._planning.plan import Batch, make_plan, plan_for_workers, target_work_seconds
from qec_kiln._planning.queue import list_schedule, predicted_makespan
from qec_kiln._report.status import sweep_progress
from qec_kiln._storage import Bucket
from qec_kiln._sweep.discover import CircuitFile, check_decodable, check_duplicates, discover_inputs
from qec_kiln._sweep.manifest import (
    CircuitEntry,
    Manifest,
    check_sweep_name,
    circuit_key,
    inputs_digest,
    load_manifest,
    manifest_key,
    orphan_message,
)

#: Relative error of a batch's predicted work (the dry run's makespan and efficiency).
MODEL_ERROR = 0.2

#: Python packages a built-in sinter decoder needs on the machine that runs it.
DECODER_PACKAGES = {
    "pymatching": "pymatching",
    "pymatching-correlated": "pymatching",
    "fusion_blossom": "fusion_blossom",
    "hypergraph_union_find": "mwpf",
    "mw_parity_factor": "mwpf",
}


@dataclasses.dataclass
class SweepSpec:
    """Everything ``plan``/``launch`` was asked for on the command line."""

    circuits: str | list[str]  # a folder, or several folders, .stim files and glob patterns
    decoders: list[str]
    max_shots: int
    max_errors: int
    bucket: str = "kiln-results"
    name: str | None = None
    backend: str = "local"
    options: BackendOptions = dataclasses.field(default_factory=BackendOptions)
    jobs: int | None = None
    target_hours: float | None = None
    circuits_per_job: int | None = None
    calibrate: bool = False
    calibrate_seconds: float = 60.0
    custom_decoders_module_function: str | None = None
    sinter_args: list[str] = dataclasses.field(default_factory=list)
    allow_shards: bool = True
    price_per_cpu_hour: float | None = None
    price_per_gpu_hour: float | None = None


@dataclasses.dataclass
class PlanResult:
    """A sweep's plan, what ``qec_kiln.plan`` returns: the manifest (batches, shards, predicted
    seconds) and how the backend would run it.

    ``exists``: the sweep was already in the bucket with the same inputs, and this is its stored
    plan. Hours are predicted: core-hours of sinter's work, wall hours with ``node_processes``
    processes per batch plus ``startup_seconds`` each, ``slots`` batches at once.
    """

    manifest: Manifest
    exists: bool  # the manifest was already in the bucket (a relaunch)
    circuits: list[CircuitFile] = dataclasses.field(repr=False)
    node_processes: int
    startup_seconds: float
    slots: int = 0  # batches running at once (0: all of them)
    estimated_cost: float | None = None  # from the prices per CPU/GPU hour, start-up included
    #: A relaunch: the predicted core-seconds still to do per batch to launch (by its fragment).
    remaining: dict[str, float] | None = None

    @property
    def sweep(self) -> str:
        return self.manifest.sweep

    @property
    def batches(self) -> list[Batch]:
        return self.manifest.batches

    @property
    def balance_ratio(self) -> float:
        """Predicted makespan over the ideal one (1.0: perfectly balanced)."""
        return self.manifest.plan.balance_ratio

    def wall_seconds(self, core_seconds: float) -> float:
        """Predicted wall seconds of a batch with ``core_seconds`` of work, start-up included."""
        return core_seconds / self.node_processes + self.startup_seconds

    @property
    def workers(self) -> int:
        """K: batches running at once, each worker taking the next batch when it is free."""
        return max(1, self.slots or len(self.batches))

    @property
    def work_seconds(self) -> float:
        """One worker's time for the whole sweep without start-up: predicted core-seconds / the
        processes of a batch."""
        return self.manifest.plan.total_predicted_seconds / self.node_processes

    def _model_makespan(self, batches: int) -> float:
        return predicted_makespan(self.work_seconds, batches, self.workers, self.startup_seconds,
                                  model_error=MODEL_ERROR) if self.work_seconds > 0 else 0.0

    @property
    def predicted_makespan_seconds(self) -> float:
        """Wall seconds until the last batch ends: the engine's queue (batches in plan order,
        longest first, each to the worker free first, a start-up each), and at least what the
        model's error adds to balanced batches (``_queue_plan.predicted_makespan``)."""
        walls = [b.predicted_seconds / self.node_processes for b in self.batches]
        queue = list_schedule(walls, self.workers, self.startup_seconds)
        return max(queue, self._model_makespan(len(walls)))

    def efficiency(self, makespan: float) -> float:
        """One worker's time / (K x makespan), start-up included."""
        return self.work_seconds / (self.workers * makespan) if makespan > 0 else 1.0

    @property
    def one_job_per_batch_makespan_seconds(self) -> float:
        """The same work as K balanced batches, one per worker (the model's error included)."""
        return self._model_makespan(self.workers)

    def to_json(self) -> dict:
        """What ``qec-kiln plan --json`` prints."""
        plan = self.manifest.plan
        data = {
            "sweep": self.sweep,
            "existing": self.exists,
            "strategy": plan.strategy,
            "batches": [
                {"id": b.id, "circuits": len({s.circuit for s in b.shards}),
                 "shards": [s.to_json() for s in b.shards],
                 "predicted_core_hours": b.predicted_seconds / 3600,
                 "predicted_wall_hours": self.wall_seconds(b.predicted_seconds) / 3600,
                 "predicted_shots": b.predicted_shots}
                for b in plan.batches
            ],
            "balance_ratio": plan.balance_ratio,
            "total_predicted_cpu_hours": plan.total_predicted_seconds / 3600,
            "predicted_makespan_hours": self.predicted_makespan_seconds / 3600,
            "batches_at_once": self.slots or len(plan.batches),
            "workers": self.workers,
            "num_batches": len(plan.batches),
            "predicted_efficiency": self.efficiency(self.predicted_makespan_seconds),
            "one_job_per_batch": {
                "num_batches": self.workers,
                "predicted_makespan_hours": self.one_job_per_batch_makespan_seconds / 3600,
                "predicted_efficiency": self.efficiency(self.one_job_per_batch_makespan_seconds),
            },
            "processes_per_batch": self.node_processes,
            "startup_seconds_per_batch": self.startup_seconds,
        }
        if self.estimated_cost is not None:
            data["estimated_cost"] = self.estimated_cost
        return data


#: The name this class had before it was the API's result; some tests still use it.
PreparedSweep = PlanResult


def estimate_cost(prepared: PlanResult, spec: SweepSpec) -> float | None:
    """Node-hours of all batches (start-up included) times the price of a node-hour."""
    node_hours = sum(prepared.wall_seconds(b.predicted_seconds)
                     for b in prepared.manifest.plan.batches) / 3600
    total = None
    if spec.price_per_cpu_hour is not None:
        total = node_hours * prepared.node_processes * spec.price_per_cpu_hour
    gpus = spec.options.gpus
    if spec.price_per_gpu_hour is not None and gpus:
        count = int(gpus.rpartition(":")[2] or 1) if ":" in gpus else 1
        total = (total or 0.0) + node_hours * count * spec.price_per_gpu_hour
    return total


def check_decoders(decoders: list[str], custom: str | None, run_here: bool) -> None:
    """Refuse unknown decoders before anything is planned; ``run_here``: the batches run on this
    machine, so their decoders must import here."""
    if not decoders:
        raise KilnError("--decoders needs at least one decoder, e.g. --decoders pymatching")
    known = set(sinter.BUILT_IN_SAMPLERS)
    if custom:
        known |= set(_custom_decoder_names(custom, required=run_here))
    for d in decoders:
        if d not in known and not (custom and not run_here):
            raise KilnError(
                f"--decoders {d!r} is not a sinter decoder; choose from {', '.join(sorted(known))} "
                "or add --custom-decoders-module-function module:function"
            )
        pkg = DECODER_PACKAGES.get(d)
        if pkg and run_here:
            try:
                importlib.import_module(pkg)
            except ImportError:
                raise KilnError(
                    f"--decoders {d!r} needs the Python package {pkg!r}, which is not installed: "
                    f"pip install {pkg.replace('_', '-')}"
                ) from None


def _custom_decoder_names(spec: str, required: bool) -> list[str]:
    return list(load_custom_decoders(spec, required=required) or {})


def load_custom_decoders(spec: str | None, *, required: bool = True) -> dict | None:
    """The dict that ``--custom-decoders-module-function module:function`` gives sinter.

    With ``required=False`` a module that cannot be loaded here gives None (it may exist only on
    the nodes); otherwise it is a KilnError naming the flag.
    """
    if not spec:
        return None
    module, _, func = spec.partition(":")
    if not module or not func:
        raise KilnError(
            f"--custom-decoders-module-function {spec!r} must look like 'module:function'"
        )
    try:
        mod = importlib.import_module(module)
        return dict(getattr(mod, func)())
    except Exception as ex:  # any import-time failure of user code
        if required:
            raise KilnError(
                f"--custom-decoders-module-function {spec!r}: cannot load it here ({ex}); "
                "install the module in this environment"
            ) from ex
        return None


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


def prepare_sweep(spec: SweepSpec, bucket: Bucket, log: Callable[[str], None]) -> PlanResult:
    """Discover and plan (or reload the stored plan of an existing sweep with the same inputs)."""
    if spec.max_shots < 1 or spec.max_errors < 1:
        raise KilnError("--max-shots and --max-errors must be positive integers")
    backend = get_backend(spec.backend)
    options = backend.options(spec.options)
    check_decoders(spec.decoders, spec.custom_decoders_module_function, backend.decoders_run_here)
    circuits = discover_inputs(
        spec.circuits, allow_tagged_gates=bool(spec.custom_decoders_module_function), log=log
    )
    check_decodable(circuits, spec.decoders)
    strong_ids = check_duplicates(circuits, spec.decoders)
    entries = [CircuitEntry(c.key, c.sha256, c.metadata) for c in circuits]
    digest = inputs_digest(entries, spec.decoders, spec.max_shots, spec.max_errors,
                           spec.custom_decoders_module_function, spec.sinter_args)
    name = check_sweep_name(spec.name) if spec.name else default_sweep_name(spec.circuits, digest)
    startup = backend.batch_startup_seconds(options)
    try:
        existing = load_manifest(bucket, name) if bucket.exists(manifest_key(name)) else None
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if existing.inputs_digest != digest:
            raise KilnError(
                f"sweep {name!r} already exists in {bucket.url} with other circuits, decoders or "
                "targets; choose another --name (or delete that sweep's folder to start over)"
            )
        log(f"sweep {name!r} exists in {bucket.url} with the same inputs: reusing its plan")
        ignored = _ignored_flags(spec, existing)
        if ignored:
            log(f"warning: {', '.join(ignored)} ignored: sweep {name!r} keeps its stored plan "
                f"({len(existing.batches)} batch(es)); give --name NEW for a new plan")
        n = len(existing.batches)
        result = PlanResult(existing, True, circuits, backend.node_processes(options, n), startup,
                            slots=backend.batch_slots(options, n))
        result.estimated_cost = estimate_cost(result, spec)
        return result
    _check_no_orphans(bucket, name)

    custom = load_custom_decoders(spec.custom_decoders_module_function) if spec.calibrate else None
    costs, features = estimate_costs(circuits, spec.decoders, strong_ids, calibrate=spec.calibrate,
                                     calibrate_seconds=spec.calibrate_seconds,
                                     custom_decoders=custom, log=log)
    jobs = spec.jobs
    target_seconds = None
    if spec.target_hours is not None:
        procs = backend.target_processes(options)
        target_seconds = target_work_seconds(spec.target_hours, startup, procs)
    workers = backend.requested_workers(options) if backend.queue_workers else None
    default = jobs is None and spec.target_hours is None and spec.circuits_per_job is None
    if default and not workers:
        jobs = backend.default_jobs(
            options, [c.predicted_seconds(spec.max_shots, spec.max_errors) for c in costs])
    if default and workers:  # B: the best predicted of a few whole rounds of K (_plan)
        procs = backend.node_processes(options, 1)
        plan = plan_for_workers(costs, max_shots=spec.max_shots, max_errors=spec.max_errors,
                                workers=workers, startup_seconds=backend.batch_startup_seconds(options),
                                first_startup_seconds=backend.startup_seconds, processes=procs,
                                model_error=MODEL_ERROR, allow_shards=spec.allow_shards,
                                min_shard_seconds=startup * procs)
    else:
        plan = make_plan(costs, max_shots=spec.max_shots, max_errors=spec.max_errors, jobs=jobs,
                         target_seconds=target_seconds, circuits_per_job=spec.circuits_per_job,
                         allow_shards=spec.allow_shards,
                         min_shard_seconds=startup * backend.node_processes(options, jobs or 1),
                         workers=workers)
    for entry in entries:
        entry.features = features.get(entry.key)
    manifest = Manifest(
        sweep=name,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        decoders=list(spec.decoders),
        max_shots=spec.max_shots,
        max_errors=spec.max_errors,
        circuits=entries,
        plan=plan,
        inputs_digest=digest,
        backend=backend.name,
        custom_decoders_module_function=spec.custom_decoders_module_function,
        sinter_args=list(spec.sinter_args),
        tasks=[dataclasses.asdict(c) for c in costs],
    )
    n = len(plan.batches)
    result = PlanResult(manifest, False, circuits, backend.node_processes(options, n), startup,
                        slots=backend.batch_slots(options, n))
    result.estimated_cost = estimate_cost(result, spec)
    return result


def _ignored_flags(spec: SweepSpec, existing: Manifest) -> list[str]:
    """Partition flags that would have changed the stored plan of an existing sweep."""
    plan = existing.plan
    flags = []
    if spec.jobs is not None and spec.jobs != len(plan.batches):
        flags.append(f"--jobs {spec.jobs}")
    if spec.target_hours is not None:
        flags.append(f"--target-hours {spec.target_hours:g}")
    if spec.circuits_per_job is not None:
        flags.append(f"--circuits-per-job {spec.circuits_per_job}")
    if not spec.allow_shards and any(s.count > 1 for b in plan.batches for s in b.shards):
        flags.append("--no-shards")
    if spec.calibrate:
        flags.append("--calibrate")
    return flags


def upload_sweep(bucket: Bucket, prepared: PlanResult, log: Callable[[str], None]) -> bool:
    """Circuits first, the manifest last: a manifest in the bucket means the sweep is complete there.

    Each object is only created, never replaced (the same bytes already there count as written),
    so two launches of one sweep at the same time cannot swap plans under each other's batches.
    Returns False when another launch created the manifest first: that plan is the sweep's
    (:func:`prepare_sweep` again reuses it).
    """
    m = prepared.manifest
    for c in prepared.circuits:
        key = circuit_key(m.sweep, c.key)
        try:
            bucket.write_if(key, c.text.encode("utf-8"), None)
        except PreconditionFailed as ex:
            _refused_create(bucket, key, ex)
            raise KilnError(
                f"{bucket.url_for(key)} already exists with other contents (left by a launch of "
                f"sweep {m.sweep!r} with other circuits?); give --name NEW, or delete "
                f"{bucket.url_for(m.sweep)} to start over"
            ) from None
    key = manifest_key(m.sweep)
    try:
        bucket.write_if(key, m.dumps(), None)
    except PreconditionFailed as ex:
        _refused_create(bucket, key, ex)
        log(f"sweep {m.sweep!r} was created in {bucket.url} by another launch at the same time: "
            "using its plan")
        return False
    log(f"uploaded {len(prepared.circuits)} circuit(s) and the manifest to {bucket.url_for(m.sweep)}")
    return True


def _refused_create(bucket: Bucket, key: str, ex: PreconditionFailed) -> None:
    """A create-if-absent refused although no object is there (a store that answered a
    conflict, or the object deleted meanwhile): say so, rather than blame another launch."""
    if not bucket.exists(key):
        raise KilnError(f"{bucket.url_for(key)}: the bucket refused to create it ({ex}) and it "
                        "is not there; launch again") from None


def _check_no_orphans(bucket: Bucket, sweep: str) -> None:
    """Refuse a new plan where a sweep of that name left fragments, leases or logs but has no
    manifest: those rows were counted against another plan (a task's shards differ between
    plans), and a run-batch of it may still be writing; merging them under a new plan could
    exceed its targets."""
    left = [k for k in bucket.list_keys(f"{sweep}/") if not k.startswith(f"{sweep}/circuits/")]
    if left:
        raise KilnError(orphan_message(bucket, sweep, left) + "; or give --name NEW")


def queue_order(batches: list[Batch]) -> list[str]:
    """Batch ids longest (predicted) first, ties in id order: the order backends start them
    (Slurm array task k, the local slots' queue), so the queue ends on short batches.

    >>> from qec_kiln._sweep.batches import Shard
    >>> b = lambda i, s: Batch(i, [Shard("c", "d", "x", 1, 1, s, 1)])
    >>> queue_order([b("b000", 1.0), b("b001", 3.0), b("b002", 1.0)])
    ['b001', 'b000', 'b002']
    """
    return [b.id for b in sorted(batches, key=lambda b: -b.predicted_seconds)]


def batches_to_launch(bucket: Bucket, prepared: PlanResult, backend: Backend
                      ) -> tuple[list[str], dict]:
    """Batches that are neither finished nor running (all of them for a new sweep)."""
    m = prepared.manifest
    if not prepared.exists:
        return queue_order(m.batches), {}
    states = backend.job_states(bucket.url, m.sweep)
    progress = sweep_progress(bucket, m, states)
    bad = [b for b in progress.batches if b.problem]
    if bad:
        raise KilnError(bad[0].problem)
    todo = [b.batch.id for b in progress.batches if not b.done and not (b.job and b.job.active)]
    prepared.remaining = {b.batch.id: b.batch.predicted_seconds * (1.0 - b.fraction)
                          for b in progress.batches if b.batch.id in todo}
    todo = [b for b in queue_order(m.batches) if b in set(todo)]
    return todo, {"done": [b.batch.id for b in progress.batches if b.done],
                  "running": [b.batch.id for b in progress.batches if b.job and b.job.active]}


def make_request(bucket: Bucket, prepared: PlanResult, batch_ids: list[str],
                 options: BackendOptions) -> LaunchRequest:
    from qec_kiln._version import __version__

    return LaunchRequest(
        bucket_url=bucket.url,
        sweep=prepared.manifest.sweep,
        batch_ids=tuple(batch_ids),
        options=options,
        num_batches_total=len(prepared.manifest.batches),
        kiln_version=__version__,
        decoders=tuple(prepared.manifest.decoders),
        custom_decoders_module_function=prepared.manifest.custom_decoders_module_function,
        node_hour_price=_node_hour_price(prepared),
    )


def _node_hour_price(prepared: PlanResult) -> float | None:
    """The price of one node-hour implied by the estimated cost (None without prices)."""
    hours = sum(prepared.wall_seconds(b.predicted_seconds) for b in prepared.batches) / 3600
    if prepared.estimated_cost is None or hours <= 0:
        return None
    return prepared.estimated_cost / hours


__all__ = [
    "SweepSpec",
    "PlanResult",
    "prepare_sweep",
    "upload_sweep",
    "batches_to_launch",
    "make_request",
]

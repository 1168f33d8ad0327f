"""``qec-kiln plan`` and ``qec-kiln launch``: discover → plan → upload → start the batches.

A sweep is identified by its name in a bucket. Launching is idempotent: if the sweep's manifest
already exists with the same inputs, its stored plan is reused and only batches that are neither
finished (by their fragments) nor running (by the backend) are started again.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import math
import pathlib
from collections.abc import Callable

import sinter

from qec_kiln._backends import BackendOptions, LaunchRequest
from qec_kiln._discover import CircuitFile, check_decodable, check_duplicates, discover_circuits
from qec_kiln._errors import KilnError, ObjectNotFound
from qec_kiln._estimate import estimate_costs
from qec_kiln._manifest import (
    CircuitEntry,
    Manifest,
    check_sweep_name,
    circuit_key,
    inputs_digest,
    load_manifest,
    manifest_key,
)
from qec_kiln._plan import make_plan
from qec_kiln._status import sweep_progress
from qec_kiln._storage import Bucket

#: Seconds a batch's job takes to start, by backend: a plan weighs it against each batch's work.
STARTUP_SECONDS = {"local": 2.0, "slurm": 30.0, "skypilot": 360.0}

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

    circuits: str
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
class PreparedSweep:
    manifest: Manifest
    exists: bool  # the manifest was already in the bucket (a relaunch)
    circuits: list[CircuitFile]
    node_processes: int
    startup_seconds: float
    slots: int = 0  # batches running at once (0: all of them)


def check_decoders(decoders: list[str], custom: str | None, backend: str) -> None:
    """Refuse unknown decoders before anything is planned."""
    if not decoders:
        raise KilnError("--decoders needs at least one decoder, e.g. --decoders pymatching")
    known = set(sinter.BUILT_IN_SAMPLERS)
    if custom:
        known |= set(_custom_decoder_names(custom, required=backend == "local"))
    for d in decoders:
        if d not in known and not (custom and backend != "local"):
            raise KilnError(
                f"--decoders {d!r} is not a sinter decoder; choose from {', '.join(sorted(known))} "
                "or add --custom-decoders-module-function module:function"
            )
        pkg = DECODER_PACKAGES.get(d)
        if pkg and backend == "local":
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


def default_sweep_name(folder: str, digest: str) -> str:
    """``<folder>-<8 hex of the inputs digest>``: the same inputs give the same sweep (idempotent).

    >>> default_sweep_name("circuits/", "0123456789abcdef")
    'circuits-01234567'
    """
    base = pathlib.Path(folder.rstrip("/")).resolve().name or "sweep"
    base = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in base).strip("-._") or "sweep"
    return f"{base[:40]}-{digest[:8]}"


def node_processes(spec: SweepSpec, num_batches_hint: int) -> int:
    """sinter processes a batch will have, for predicted wall hours."""
    if spec.options.processes:
        return spec.options.processes
    if spec.backend == "local":
        from qec_kiln._backends.local import split_cores

        return split_cores(num_batches_hint, spec.options.parallel, None)[1]
    if spec.options.cpus:
        digits = "".join(ch for ch in spec.options.cpus if ch.isdigit())
        if digits:
            return max(1, int(digits))
    return 16 if spec.backend == "skypilot" else 1


def prepare_sweep(spec: SweepSpec, bucket: Bucket, log: Callable[[str], None]) -> PreparedSweep:
    """Discover and plan (or reload the stored plan of an existing sweep with the same inputs)."""
    if spec.max_shots < 1 or spec.max_errors < 1:
        raise KilnError("--max-shots and --max-errors must be positive integers")
    check_decoders(spec.decoders, spec.custom_decoders_module_function, spec.backend)
    circuits = discover_circuits(
        spec.circuits, allow_tagged_gates=bool(spec.custom_decoders_module_function), log=log
    )
    check_decodable(circuits, spec.decoders)
    strong_ids = check_duplicates(circuits, spec.decoders)
    entries = [CircuitEntry(c.key, c.sha256, c.metadata) for c in circuits]
    digest = inputs_digest(entries, spec.decoders, spec.max_shots, spec.max_errors,
                           spec.custom_decoders_module_function, spec.sinter_args)
    name = check_sweep_name(spec.name) if spec.name else default_sweep_name(spec.circuits, digest)
    startup = STARTUP_SECONDS.get(spec.backend, 60.0)
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
        procs = node_processes(spec, len(existing.batches))
        return PreparedSweep(existing, True, circuits, procs, startup,
                             slots=batch_slots(spec, len(existing.batches)))

    custom = load_custom_decoders(spec.custom_decoders_module_function) if spec.calibrate else None
    costs, features = estimate_costs(circuits, spec.decoders, strong_ids, calibrate=spec.calibrate,
                                     calibrate_seconds=spec.calibrate_seconds,
                                     custom_decoders=custom, log=log)
    jobs = spec.jobs
    target_seconds = None
    if spec.target_hours is not None:
        # Locally, many batches share the cores: count one process per batch (the worst case).
        procs = spec.options.processes or (1 if spec.backend == "local" else node_processes(spec, 1))
        target_seconds = max(1e-9, spec.target_hours * 3600 - startup) * procs
    if jobs is None and spec.target_hours is None and spec.circuits_per_job is None:
        jobs = default_jobs(spec, [c.predicted_seconds(spec.max_shots, spec.max_errors) for c in costs],
                            startup)
    plan = make_plan(costs, max_shots=spec.max_shots, max_errors=spec.max_errors, jobs=jobs,
                     target_seconds=target_seconds, circuits_per_job=spec.circuits_per_job,
                     allow_shards=spec.allow_shards,
                     min_shard_seconds=startup * node_processes(spec, jobs or 1))
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
        backend=spec.backend,
        custom_decoders_module_function=spec.custom_decoders_module_function,
        sinter_args=list(spec.sinter_args),
        tasks=[dataclasses.asdict(c) for c in costs],
    )
    return PreparedSweep(manifest, False, circuits, node_processes(spec, len(plan.batches)), startup,
                         slots=batch_slots(spec, len(plan.batches)))


def batch_slots(spec: SweepSpec, num_batches: int) -> int:
    """How many batches run at once: locally the core slots, elsewhere all of them."""
    if spec.backend == "local":
        from qec_kiln._backends.local import split_cores

        return split_cores(num_batches, spec.options.parallel, spec.options.processes)[0]
    return num_batches


def default_jobs(spec: SweepSpec, task_seconds: list[float], startup: float) -> int:
    """How many batches when none of --jobs/--target-hours/--circuits-per-job is given.

    Local: one per core slot. Remote: as many as keep each job's work at least 4x its start-up
    (about 80% efficiency), since on a cloud a job takes minutes to start (see docs/design.md).
    """
    n_tasks = len(task_seconds)
    if spec.backend == "local":
        from qec_kiln._backends.local import split_cores

        return split_cores(n_tasks, spec.options.parallel, spec.options.processes)[0]
    procs = node_processes(spec, 1)
    wall = sum(task_seconds) / procs
    return max(1, min(n_tasks * 4, math.floor(wall / (4 * startup)) or 1))


def upload_sweep(bucket: Bucket, prepared: PreparedSweep, log: Callable[[str], None]) -> None:
    """Circuits first, the manifest last: a manifest in the bucket means the sweep is complete there."""
    m = prepared.manifest
    for c in prepared.circuits:
        bucket.write_bytes(circuit_key(m.sweep, c.key), c.text.encode("utf-8"))
    bucket.write_bytes(manifest_key(m.sweep), m.dumps())
    log(f"uploaded {len(prepared.circuits)} circuit(s) and the manifest to {bucket.url_for(m.sweep)}")


def batches_to_launch(bucket: Bucket, prepared: PreparedSweep, backend) -> tuple[list[str], dict]:
    """Batches that are neither finished nor running (all of them for a new sweep)."""
    m = prepared.manifest
    if not prepared.exists:
        return [b.id for b in m.batches], {}
    states = backend.job_states(bucket.url, m.sweep)
    progress = sweep_progress(bucket, m, states)
    bad = [b for b in progress.batches if b.problem]
    if bad:
        raise KilnError(bad[0].problem)
    todo = [b.batch.id for b in progress.batches if not b.done and not (b.job and b.job.active)]
    return todo, {"done": [b.batch.id for b in progress.batches if b.done],
                  "running": [b.batch.id for b in progress.batches if b.job and b.job.active]}


def make_request(bucket: Bucket, prepared: PreparedSweep, batch_ids: list[str],
                 options: BackendOptions) -> LaunchRequest:
    from qec_kiln import __version__

    return LaunchRequest(
        bucket_url=bucket.url,
        sweep=prepared.manifest.sweep,
        batch_ids=tuple(batch_ids),
        options=options,
        num_batches_total=len(prepared.manifest.batches),
        kiln_version=__version__,
    )


__all__ = [
    "SweepSpec",
    "PreparedSweep",
    "prepare_sweep",
    "upload_sweep",
    "batches_to_launch",
    "make_request",
]

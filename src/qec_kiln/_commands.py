"""The subcommands behind ``qec-kiln``: argument namespaces in, exit codes out."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from qec_kiln._backends import BackendOptions, get_backend
from qec_kiln._cli import sinter_options
from qec_kiln._errors import KilnError, StorageError
from qec_kiln._launch import (
    PreparedSweep,
    SweepSpec,
    batches_to_launch,
    make_request,
    prepare_sweep,
    upload_sweep,
)
from qec_kiln._manifest import load_manifest, resolve_sweep
from qec_kiln._storage import open_bucket

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _log(msg: str) -> None:
    err.print(msg, markup=False)


def _options(args: argparse.Namespace) -> BackendOptions:
    g = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    return BackendOptions(
        parallel=g("parallel"), processes=g("processes"), sync_seconds=g("sync_seconds", 30.0),
        cpus=g("cpus"), gpus=g("gpus"), infra=g("infra"), use_spot=not g("no_spot", False),
        yaml_path=g("yaml"), partition=g("partition"), account=g("account"),
        time_limit=g("time"), sbatch_template=g("sbatch_template"),
        extra_sbatch=tuple(g("sbatch_option", []) or ()),
    )


def _spec(args: argparse.Namespace) -> SweepSpec:
    return SweepSpec(
        circuits=args.circuits, decoders=list(args.decoders), max_shots=args.max_shots,
        max_errors=args.max_errors, bucket=args.bucket, name=args.name,
        backend=args.backend.lower(), options=_options(args), jobs=args.jobs,
        target_hours=args.target_hours, circuits_per_job=args.circuits_per_job,
        calibrate=args.calibrate, calibrate_seconds=args.calibrate_seconds,
        custom_decoders_module_function=args.custom_decoders_module_function,
        allow_shards=not args.no_shards, sinter_args=sinter_options(args.sinter_option),
        price_per_cpu_hour=args.price_per_cpu_hour, price_per_gpu_hour=args.price_per_gpu_hour,
    )


class _NoBucket:
    """Stand-in for a bucket a dry run could not reach: nothing exists in it."""

    def __init__(self, url: str):
        self.url = url

    def exists(self, key: str) -> bool:
        return False


def _check_remote_bucket(spec: SweepSpec, dry_run: bool) -> None:
    """Cloud nodes cannot see this machine's folders: refuse a plain local path for SkyPilot."""
    if spec.backend != "skypilot" or spec.bucket.startswith(("s3://", "gs://", "file://")):
        return
    msg = (f"--bucket {spec.bucket!r} is a folder on this machine, which SkyPilot's nodes cannot "
           "see; use s3://BUCKET or gs://BUCKET (or file:///PATH for a volume mounted at that "
           "path on every node, e.g. a Kubernetes PVC)")
    if not dry_run:
        raise KilnError(msg)
    _log("warning: " + msg)


def _prepare(args: argparse.Namespace, *, need_bucket: bool):
    spec = _spec(args)
    _check_remote_bucket(spec, dry_run=not need_bucket)
    backend = get_backend(spec.backend)
    bucket = open_bucket(spec.bucket)
    try:
        bucket.check_access()
    except StorageError as ex:
        if need_bucket:
            raise
        _log(f"warning: {ex} (dry run: showing a fresh plan)")
        bucket = _NoBucket(bucket.url)
    prepared = prepare_sweep(spec, bucket, _log)
    return spec, backend, bucket, prepared


def cmd_plan(args: argparse.Namespace) -> int:
    spec, _, _, prepared = _prepare(args, need_bucket=False)
    if args.json:
        print(json.dumps(plan_json(prepared, spec), indent=1))
    else:
        print_plan(prepared, spec)
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    spec, backend, bucket, prepared = _prepare(args, need_bucket=not args.dry_run)
    if args.dry_run:
        todo = [b.id for b in prepared.manifest.batches]
        request = make_request(bucket, prepared, todo, spec.options)
        described = backend.describe(request)
        if args.json:
            data = plan_json(prepared, spec)
            data["backend"] = {"name": backend.name, "describe": described}
            print(json.dumps(data, indent=1))
        else:
            print_plan(prepared, spec)
            out.print()
            out.print(described, markup=False)
            out.print("\n[bold]dry run:[/] nothing was uploaded or launched")
        return 0
    if not prepared.exists:
        upload_sweep(bucket, prepared, _log)
    todo, info = batches_to_launch(bucket, prepared, backend)
    if info:
        _log(f"{len(info['done'])} batch(es) already finished, {len(info['running'])} running")
    if not todo:
        _log(f"nothing to launch: sweep {prepared.manifest.sweep!r} has no unfinished, "
             "idle batch; see `qec-kiln status`")
        if args.json:
            print(json.dumps({"sweep": prepared.manifest.sweep, "launched": [], "job_ids": {},
                              "message": "nothing to launch", "failed": [], **info}, indent=1))
        else:
            _print_next_steps(bucket.url, prepared.manifest.sweep)
        return 0
    if not args.json:
        print_plan(prepared, spec, only=set(todo))
    request = make_request(bucket, prepared, todo, spec.options)
    result = backend.launch(request)
    if args.json:
        print(json.dumps({"sweep": prepared.manifest.sweep, "launched": todo,
                          "job_ids": result.job_ids, "message": result.message,
                          "failed": result.failed}, indent=1))
    else:
        _log(result.message)
        if backend.name != "local":
            for b, j in result.job_ids.items():
                out.print(f"  {b}: job {j}", markup=False)
        _print_next_steps(bucket.url, prepared.manifest.sweep)
    if result.interrupted:
        return 130
    return 1 if result.failed else 0


def _print_next_steps(bucket_url: str, sweep: str) -> None:
    _log(f"next: qec-kiln status --bucket {bucket_url} --sweep {sweep}\n"
         f"      qec-kiln merge --bucket {bucket_url} --sweep {sweep} --out merged.csv")


def cmd_run_batch(args: argparse.Namespace) -> int:
    from qec_kiln._runner import run_batch

    batch = args.batch
    if batch is None:
        if not args.batches or args.index is None:
            raise KilnError("run-batch needs --batch ID, or --batches LIST with --index N")
        ids = [b for b in args.batches.split(",") if b]
        try:
            idx = int(args.index)
        except ValueError:
            raise KilnError(f"--index {args.index!r} is not an integer") from None
        if not 0 <= idx < len(ids):
            raise KilnError(f"--index {idx} is outside --batches ({len(ids)} batches)")
        batch = ids[idx]
    return run_batch(args.bucket, args.sweep, batch, processes=args.processes,
                     sync_seconds=args.sync_seconds, work_dir=args.work_dir)


def cmd_status(args: argparse.Namespace) -> int:
    from qec_kiln._status import sweep_progress

    bucket = open_bucket(args.bucket)  # only read: a read-only bucket is fine
    reports = []
    for name in resolve_sweep(bucket, args.sweep):
        manifest = load_manifest(bucket, name)
        backend = get_backend(args.backend or manifest.backend)
        try:
            states = backend.job_states(bucket.url, name)
        except KilnError as ex:
            _log(f"warning: {ex}; showing fragment progress only")
            states = {}
        if getattr(backend, "warning", None):
            _log(f"warning: {backend.warning}")
        report = sweep_progress(bucket, manifest, states)
        report.backend = backend.name
        reports.append(report)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=1))
        return 0
    for r in reports:
        print_status(r)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    bucket = open_bucket(args.bucket)
    manifest = load_manifest(bucket, args.sweep)
    backend = get_backend(args.backend or manifest.backend)
    cancelled = backend.cancel(bucket.url, manifest.sweep)
    if cancelled:
        out.print(f"cancelled {len(cancelled)} job(s) of sweep {manifest.sweep}: "
                  f"{', '.join(cancelled)}; fragments are kept, `launch` again to resume",
                  markup=False)
    else:
        out.print(f"no running job of sweep {manifest.sweep} found", markup=False)
    return 0


# ---------------------------------------------------------------------------------------------
# Rendering


def _hours(seconds: float) -> str:
    """Hours with three significant digits.

    >>> _hours(36), _hours(3600 * 12.345)
    ('0.01', '12.3')
    """
    h = seconds / 3600
    return f"{h:.3g}" if h < 10 else f"{h:.1f}"


def _wall_seconds(core_seconds: float, prepared: PreparedSweep) -> float:
    return core_seconds / prepared.node_processes + prepared.startup_seconds


def _predicted_makespan(prepared: PreparedSweep) -> float:
    """Wall seconds until the last batch ends, batches started in plan order on the free slots."""
    walls = [_wall_seconds(b.predicted_seconds, prepared) for b in prepared.manifest.batches]
    slots = [0.0] * max(1, prepared.slots or len(walls))
    for w in walls:
        i = slots.index(min(slots))
        slots[i] += w
    return max(slots)


def plan_json(prepared: PreparedSweep, spec: SweepSpec) -> dict:
    m = prepared.manifest
    plan = m.plan
    total = plan.total_predicted_seconds
    data = {
        "sweep": m.sweep,
        "existing": prepared.exists,
        "strategy": plan.strategy,
        "batches": [
            {"id": b.id, "circuits": len({s.circuit for s in b.shards}),
             "shards": [s.to_json() for s in b.shards],
             "predicted_core_hours": b.predicted_seconds / 3600,
             "predicted_wall_hours": _wall_seconds(b.predicted_seconds, prepared) / 3600,
             "predicted_shots": b.predicted_shots}
            for b in plan.batches
        ],
        "balance_ratio": plan.balance_ratio,
        "total_predicted_cpu_hours": total / 3600,
        "predicted_makespan_hours": _predicted_makespan(prepared) / 3600,
        "batches_at_once": prepared.slots or len(plan.batches),
        "processes_per_batch": prepared.node_processes,
        "startup_seconds_per_batch": prepared.startup_seconds,
    }
    cost = _cost_estimate(prepared, spec)
    if cost is not None:
        data["estimated_cost"] = cost
    return data


def _cost_estimate(prepared: PreparedSweep, spec: SweepSpec) -> float | None:
    """Node-hours of all batches (start-up included) times the price of a node-hour."""
    node_hours = sum(_wall_seconds(b.predicted_seconds, prepared)
                     for b in prepared.manifest.plan.batches) / 3600
    total = None
    if spec.price_per_cpu_hour is not None:
        total = node_hours * prepared.node_processes * spec.price_per_cpu_hour
    if spec.price_per_gpu_hour is not None and spec.options.gpus:
        gpus = int(spec.options.gpus.rpartition(":")[2] or 1) if ":" in spec.options.gpus else 1
        total = (total or 0.0) + node_hours * gpus * spec.price_per_gpu_hour
    return total


def print_plan(prepared: PreparedSweep, spec: SweepSpec, only: set[str] | None = None) -> None:
    m = prepared.manifest
    plan = m.plan
    title = (f"sweep {m.sweep}: {len(m.circuits)} circuit(s) x {len(m.decoders)} decoder(s), "
             f"{len(plan.batches)} batch(es) ({plan.strategy})")
    table = Table(title=title, title_justify="left")
    for col in ("batch", "tasks", "of them shards", "predicted shots", "core-hours", "wall hours"):
        table.add_column(col, justify="left" if col == "batch" else "right")
    for b in plan.batches:
        if only is not None and b.id not in only:
            continue
        n_sharded = sum(1 for s in b.shards if s.count > 1)
        table.add_row(b.id, str(len(b.shards)), str(n_sharded),
                      f"{b.predicted_shots:,.0f}", _hours(b.predicted_seconds),
                      _hours(_wall_seconds(b.predicted_seconds, prepared)))
    out.print(table)
    total = plan.total_predicted_seconds
    out.print(
        f"balance (predicted makespan / ideal): {plan.balance_ratio:.3f}   "
        f"total: {_hours(total)} CPU-hours   "
        f"predicted makespan: {_hours(_predicted_makespan(prepared))} h "
        f"({prepared.node_processes} sinter process(es) per batch, "
        f"{prepared.slots or len(plan.batches)} batch(es) at once, "
        f"{prepared.startup_seconds:g} s start-up each)",
        markup=False,
    )
    cost = _cost_estimate(prepared, spec)
    if cost is not None:
        out.print(f"estimated cost: {cost:,.2f} (in the currency of --price-per-cpu-hour/"
                  "--price-per-gpu-hour; start-up included)", markup=False)


def print_status(report) -> None:
    m = report.manifest
    table = Table(title=f"sweep {m.sweep} ({report.backend or m.backend}): "
                  f"{report.fraction_done:.0%} done",
                  title_justify="left")
    show_recoveries = any(b.job and b.job.recoveries is not None for b in report.batches)
    cols = ["batch", "state", "job"] + (["recoveries"] if show_recoveries else [])
    for col in cols + ["shots", "errors", "done", "ETA"]:
        table.add_column(col, justify="left" if col in ("batch", "state", "job") else "right")
    for b in report.batches:
        eta = b.eta_seconds
        row = [b.batch.id, b.state, b.job.job_id if b.job else "-"]
        if show_recoveries:
            row.append("-" if not b.job or b.job.recoveries is None else str(b.job.recoveries))
        row += [f"{b.shots:,}", f"{b.errors:,}", f"{b.fraction:.0%}",
                "-" if eta is None else f"{eta / 60:.1f} min"]
        table.add_row(*row)
    out.print(table)
    shots = sum(b.shots for b in report.batches)
    out.print(f"total: {shots:,} shots, {sum(b.errors for b in report.batches):,} errors; "
              f"{len(report.batches) - len(report.unfinished)}/{len(report.batches)} batches done",
              markup=False)
    for w in report.warnings:
        err.print(f"warning: {w}", markup=False)

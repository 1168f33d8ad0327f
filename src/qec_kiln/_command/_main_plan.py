"""``qec-kiln plan`` and ``qec_kiln.plan``: discover the circuits and balance them into
batches; upload and start nothing. The sweep's flags are defined here (``launch`` takes the
same, and prints the same table).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._argtypes import SINTER_OPTIONS, positive_float, positive_int
from qec_kiln._command._base import (
    Circuits,
    Parser,
    numpy_on_one_thread,
    out,
    parse_args,
    quiet,
    run,
    say,
)
from qec_kiln._errors import Log
from qec_kiln._report.units import duration, money

if TYPE_CHECKING:
    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.status import Relaunch
    from qec_kiln._sweep.spec import TaskTarget

HELP = "discover and partition circuits; print the plan"


def plan(circuits: Circuits, *, log: Log | None = None, **settings: Any) -> PlanResult:
    """Discover the circuits and balance them into batches; upload and start nothing
    (``qec-kiln plan``).

    Args:
        circuits: a folder of ``.stim`` files (searched recursively), or a list of folders,
            ``.stim`` files and glob patterns, as ``sinter collect --circuits``.
        log: receives progress and warning lines; without it, warnings are issued as
            :class:`KilnWarning` (a ``UserWarning``).
        **settings: the flags of ``qec-kiln plan`` as keywords (``max_shots=10_000``,
            ``decoders=["pymatching"]``, ``jobs=4``, ``shards=False``,
            ``sinter_options=[...]``; ``inspect.signature`` shows each with its default).
            ``jobs``, ``target_hours`` or ``circuits_per_job`` pick the number of batches
            (default: from the backend); ``backend_options`` are the backend's settings, e.g.
            ``{"partition": "long"}`` for Slurm. ``custom_decoders={"name": obj}`` (Python
            only, as in ``sinter.collect``): ``sinter.Decoder``/``sinter.Sampler`` objects,
            notebook classes included, that ``decoders`` names; they are pickled with
            cloudpickle and shipped beside the manifest, which records their digests and this
            Python's version (the nodes check both; see SECURITY.md).

    Returns:
        The plan. When the sweep (``name``, default: the folder name and a digest of the
        inputs) is already in ``bucket``, its stored plan (``exists``), with a warning naming
        the settings it ignores.

    Examples:
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
    from qec_kiln._prepare import Fleet, prepare_sweep

    log = log or quiet
    fleet = Fleet.build(settings)
    # Only read: an unreachable bucket reads as empty, with a warning.
    bucket = fleet.backend.open_bucket(fleet.bucket_url, must_reach=False, launching=False,
                                       log=log)
    return prepare_sweep(circuits, fleet, bucket, log)


def with_settings_signature(func: Callable[..., Any]) -> None:
    """Show every setting with its default in ``help()`` and ``inspect.signature``."""
    import inspect

    from qec_kiln._sweep.spec import SweepSpec

    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in SweepSpec.defaults().items()]
    func.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]


with_settings_signature(plan)


def parser() -> Parser:
    p = Parser(prog="qec-kiln plan", description=HELP)
    add_sweep_arguments(p)
    add_backend_arguments(p, "the plan's defaults depend on it")
    return p


def main(argv: Sequence[str]) -> int:
    p = parser()
    args = parse_args(p, argv, hint=_dry_run_hint)
    args.circuits = circuits_of(args, p)
    return run(handle, args)


def _dry_run_hint(extra: list[str]) -> str:
    if {"--dry-run", "--dry_run"} & set(extra):
        return ("; plan uploads and launches nothing already (`qec-kiln launch ... --dry-run` "
                "also shows the job files)")
    return ""


def handle(args: argparse.Namespace) -> int:
    numpy_on_one_thread()
    prepared = plan(args.circuits, log=say, **settings_of(args))
    if args.json:
        print(json.dumps(prepared.to_json(), indent=1))
    else:
        print_plan(prepared)
    return 0


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of a SweepSpec: each flag's dest is its setting's name (``--max-shots`` is
    ``max_shots``), and an absent flag takes the spec's default (shown in the help)."""
    from qec_kiln._sweep.spec import SweepSpec

    default = SweepSpec.defaults()
    keep = argparse.SUPPRESS  # absent: not in the namespace, so the spec's default applies
    p.add_argument("circuits", nargs="*", metavar="DIR_OR_FILES",
                   help="folders of .stim circuits (searched recursively), .stim files or glob "
                   "patterns; names like d=5,p=0.001,b=X,type=rotated_surface_memory.stim give "
                   "the metadata")
    p.add_argument("--circuits", nargs="+", dest="circuits_opt", metavar="DIR_OR_FILES",
                   help="the same, spelled as in `sinter collect --circuits`")
    p.add_argument("--decoders", nargs="+", default=keep, metavar="NAME",
                   help=f"sinter decoders (default: {' '.join(default['decoders'])})")
    p.add_argument("--custom-decoders-module-function", default=keep, metavar="MODULE:FUNC",
                   help="passed to sinter collect unchanged (e.g. chromobius:sinter_decoders)")
    p.add_argument("--max-shots", type=positive_int, default=keep,
                   help=f"shots per circuit and decoder (default {default['max_shots']:_})")
    p.add_argument("--max-errors", type=positive_int, default=keep,
                   help=f"stop a circuit after this many logical errors (default "
                   f"{default['max_errors']})")
    p.add_argument("--existing-data", "--existing-data-filepaths", nargs="+", default=keep,
                   metavar="CSV", help="sinter CSVs from elsewhere (e.g. a workstation's "
                   "`sinter collect`) whose rows count toward the targets, as sinter's "
                   "--existing_data_filepaths; rows the bucket already holds count without it")
    p.add_argument("--merge-existing-data", action="store_true", default=keep,
                   help="also import the --existing-data rows into the bucket (once, as a "
                   "read-only sweep import-HASH) so that merge includes them")
    p.add_argument("--task-targets", type=task_targets, default=keep, metavar="JSON",
                   help="per-task targets instead of --max-shots/--max-errors: "
                   "'{\"d=3.stim\": {\"pymatching\": [MAX_SHOTS, MAX_ERRORS]}}' (circuit key, "
                   "decoder; [0, 0] leaves that task out; [..., START_BATCH_SIZE, "
                   "MAX_BATCH_SIZE, MAX_BATCH_SECONDS] (null: sinter's default) gives the task "
                   "its own sinter batch options), as qec_kiln.collect gives sinter's per-task "
                   "collection_options")
    p.add_argument("--fresh", action="store_true", default=keep,
                   help="count no existing rows; refused where the bucket holds rows of these "
                   "tasks (a merge would add them): give a new --bucket")
    g = p.add_argument_group("partitioning (pick one; default: chosen from the backend)")
    g.add_argument("--jobs", type=positive_int, default=keep, help="balance into N batches")
    g.add_argument("--target-hours", type=positive_float, default=keep,
                   help="as many batches as needed so none is predicted to run longer")
    g.add_argument("--circuits-per-job", type=positive_int, metavar="N", default=keep,
                   help="ceil(tasks / N) batches, a task being one circuit x decoder, balanced "
                   "by predicted cost")
    g.add_argument("--no-shards", action="store_false", dest="shards", default=keep,
                   help="never split a big circuit's shots over several batches")
    g.add_argument("--calibrate", action="store_true", default=keep,
                   help="time a short pilot of every circuit here first (cached by strong_id)")
    g.add_argument("--calibrate-seconds", type=positive_float, default=keep,
                   help=f"total time budget of --calibrate (default "
                   f"{default['calibrate_seconds']:g})")
    g.add_argument("--price-per-cpu-hour", type=positive_float, default=keep,
                   help="for a cost estimate")
    g.add_argument("--price-per-gpu-hour", type=positive_float, default=keep,
                   help="for a cost estimate")
    g = p.add_argument_group("postselection and counts (sinter collect's flags, passed to "
                             "every batch; the masks enter strong_ids exactly as in sinter)")
    g.add_argument("--postselected-detectors-predicate", default=keep, metavar="EXPR",
                   help="discard a shot when a detector for which EXPR(index, metadata, coords) "
                   "is true fires, e.g. \"coords[3] > 0\"")
    g.add_argument("--postselected-observables-predicate", default=keep, metavar="EXPR",
                   help="discard a shot, instead of counting an error, when the decoder "
                   "mispredicts an observable for which EXPR(index, metadata) is true")
    g.add_argument("--postselect-detectors-with-non-zero-4th-coord", action="store_true",
                   default=keep, help="discard a shot when a detector with a non-zero 4th "
                   "coordinate fires")
    g.add_argument("--custom-error-count-key", default=keep, metavar="KEY",
                   help="--max-errors counts custom_counts[KEY] instead of errors (e.g. "
                   "detection_events with --sinter-option=--count_detection_events); merge and "
                   "status judge targets by it too")
    p.add_argument("--sinter-option", action="append", dest="sinter_options", default=keep,
                   metavar="OPT",
                   help="passed to every sinter collect, e.g. "
                   "--sinter-option=--count_observable_error_combos (repeatable; only options "
                   "that leave strong_ids unchanged: " + ", ".join(SINTER_OPTIONS) + ")")
    p.add_argument("--bucket", default=keep,
                   help="s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or a directory "
                   f"(default ./{default['bucket']})")
    p.add_argument("--name", default=keep, help="sweep name (default: folder name + digest of "
                   "the inputs, so relaunching the same command resumes the same sweep)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def task_targets(text: str) -> dict[str, dict[str, TaskTarget]]:
    """``--task-targets``: circuit key -> decoder -> [max_shots, max_errors], as JSON, or
    [max_shots, max_errors, start_batch_size, max_batch_size, max_batch_seconds] (null: sinter's
    default) for a task with its own sinter batch options.

    >>> task_targets('{"d=3.stim": {"pymatching": [100, 10], "x": [5, 1, null, 64, null]}}')
    {'d=3.stim': {'pymatching': (100, 10), 'x': (5, 1, None, 64, None)}}
    """
    from qec_kiln._sweep.spec import batch_options

    def record(t: list) -> TaskTarget:
        if len(t) not in (2, 5):
            raise ValueError(t)
        return (int(t[0]), int(t[1]), *(batch_options(t[2:]) if len(t) == 5 else ()))

    try:
        data = json.loads(text)
        return {str(k): {str(d): record(t) for d, t in v.items()} for k, v in data.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        raise argparse.ArgumentTypeError(
            'give JSON like {"d=3.stim": {"pymatching": [100000, 100]}} (or [max_shots, '
            'max_errors, start_batch_size, max_batch_size, max_batch_seconds], each batch '
            'option a positive integer or null)') from None


def add_backend_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """``--backend`` and every backend's own flags."""
    from qec_kiln._backends import BACKENDS
    from qec_kiln._backends import add_arguments as add_backend_arguments

    p.add_argument("--backend", default="local",
                   help=f"{', '.join(BACKENDS)} (default local); {what}")
    add_backend_arguments(p)  # each backend's light options module only


def circuits_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The positional circuits and ``--circuits``'s together; none is an error of ``parser``."""
    circuits = list(args.circuits) + list(args.circuits_opt or [])
    if not circuits:
        parser.error("no circuits: give a folder of .stim files, .stim files, or "
                     "--circuits DIR_OR_FILES...")
    return circuits


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep's flags as the API's settings: a flag's dest is its setting's name."""
    from qec_kiln._backends import backend_class
    from qec_kiln._sweep.spec import SweepSpec

    settings = {name: getattr(args, name) for name in SweepSpec.setting_names()
                if hasattr(args, name)}
    settings["backend_options"] = backend_class(args.backend).options_from_args(args)
    return settings


def print_plan(prepared: PlanResult, only: set[str] | None = None,
               relaunch: Relaunch | None = None) -> None:
    m = prepared.manifest
    plan = m.plan
    left = relaunch.remaining if relaunch is not None and only is not None else None
    title = (f"sweep {m.sweep}: {len(m.circuits)} circuit(s) x {len(m.decoders)} decoder(s), "
             f"{len(plan.batches)} batch(es) ({plan.strategy})")
    if left is not None:
        title += f"; relaunch: {len(only or ())} batch(es) with work left"
    if m.existing and only is None:
        print_existing(prepared)
    if m.shipped is not None and only is None:
        out.print("custom decoder objects shipped with the sweep (checked by digest on the "
                  "nodes):\n  " + "\n  ".join(m.shipped.describe()), markup=False)
    if not plan.batches:
        out.print(f"sweep {m.sweep}: nothing to sample, every task already reaches max_shots "
                  f"{m.max_shots:,} or max_errors {m.max_errors:,}", markup=False)
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("batch", "tasks", "of them shards", "predicted shots", "core time", "wall time"):
        table.add_column(col, justify="left" if col == "batch" else "right")
    for b in plan.batches:
        if only is not None and b.id not in only:
            continue
        n_sharded = sum(1 for s in b.shards if s.count > 1)
        seconds = b.predicted_seconds if left is None else left.get(b.id, b.predicted_seconds)
        table.add_row(b.id, str(len(b.shards)), str(n_sharded),
                      f"{b.predicted_shots:,.0f}", duration(seconds),
                      duration(prepared.wall_seconds(seconds)))
    out.print(table)
    total = plan.total_predicted_seconds
    if left is not None:
        out.print(f"remaining: {duration(sum(left.values()))} of {duration(total)} of CPU time "
                  "planned (by the fragments so far)", markup=False)
        return
    out.print(
        f"balance (predicted makespan / ideal): {plan.balance_ratio:.3f}   "
        f"total: {duration(total)} of CPU time   "
        f"predicted makespan: {duration(prepared.predicted_makespan_seconds)} "
        f"({prepared.node_processes} sinter process(es) per batch, "
        f"{prepared.slots or len(plan.batches)} batch(es) at once, "
        f"{prepared.startup_seconds:g} s start-up each)",
        markup=False,
    )
    one = prepared.one_job_per_batch_makespan_seconds
    out.print(
        f"workers K={prepared.workers}, batches B={len(plan.batches)}: predicted makespan "
        f"{duration(prepared.predicted_makespan_seconds)}, efficiency "
        f"{prepared.efficiency(prepared.predicted_makespan_seconds):.0%}   one batch per worker "
        f"(B=K={prepared.workers}): {duration(one)}, {prepared.efficiency(one):.0%} "
        "(efficiency: one worker's time / (K x makespan), start-up included)",
        markup=False,
    )
    cost = prepared.estimated_cost
    if cost is not None:
        out.print(f"estimated cost: {money(cost)} (in the currency of --price-per-cpu-hour/"
                  "--price-per-gpu-hour; start-up included)", markup=False)


#: Tasks the dry run lists one per line; beyond it, a count.
TASK_LINES = 40


def print_existing(prepared: PlanResult) -> None:
    """Per task: the rows that exist (counted toward the targets) and what is left."""
    from rich.table import Table

    m = prepared.manifest
    table = Table(title=f"existing rows counted toward max_shots {m.max_shots:,} / max_errors "
                  f"{m.max_errors:,} (as sinter counts its resume file)", title_justify="left")
    several = len(m.decoders) > 1
    for col in ("task", "existing shots", "errors", "left shots", "left errors"):
        table.add_column(col, justify="left" if col == "task" else "right")
    rows = prepared.task_rows()
    for r in rows[:TASK_LINES]:
        done = r["left_shots"] == 0
        table.add_row(r["circuit"].removesuffix(".stim") + (f" ({r['decoder']})" if several else ""),
                      f"{r['existing_shots']:,}", f"{r['existing_errors']:,}",
                      "done" if done else f"{r['left_shots']:,}",
                      "done" if done else f"{r['left_errors']:,}")
    out.print(table)
    if len(rows) > TASK_LINES:
        out.print(f"... and {len(rows) - TASK_LINES} more task(s) (--json lists them all)",
                  markup=False)


__all__ = ["plan", "print_plan"]

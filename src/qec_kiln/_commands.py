"""The subcommands behind ``qec-kiln``: parsed flags in, a call of the Python API (``_api``),
its result printed, an exit code out.

Each command imports ``_api`` itself: importing it builds ``plan``'s and ``launch``'s signatures
from the sweep settings (``_sweep.spec``), which a merge never needs. ``merge`` calls what
``_api.merge`` calls, so that it starts as quickly as ``sinter combine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from qec_kiln._errors import Exit, KilnError
from qec_kiln._report.output import STDOUT
from qec_kiln._report.units import duration, money, percent

if TYPE_CHECKING:
    from rich.console import Console

    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.merge import MergeReport
    from qec_kiln._report.status import BatchProgress, Relaunch, StatusReport

def _console(stderr: bool) -> Console:
    """A rich console that ends like a plain print when its reader leaves (`qec-kiln plan |
    head -1`): through `_cli.main`'s quiet exit 141, not rich's own exit 1."""
    from rich.console import Console

    class _Quiet(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Quiet(stderr=stderr, highlight=False, soft_wrap=True)


class _Lazy:
    """The console, made on first use: `qec-kiln merge` and `cancel` never import rich."""

    def __init__(self, stderr: bool):
        self.stderr = stderr
        self.made: Console | None = None

    def __getattr__(self, name: str):
        if self.made is None:
            self.made = _console(self.stderr)
        return getattr(self.made, name)


out = _Lazy(stderr=False)
err = _Lazy(stderr=True)


def _log(msg: str) -> None:
    err.print(msg, markup=False)


def _settings(args: argparse.Namespace) -> dict:
    """``plan``/``launch`` flags as the API's settings: a flag's dest is its setting's name."""
    from qec_kiln._backends import backend_class
    from qec_kiln._sweep.spec import SweepSpec

    settings = {name: getattr(args, name) for name in SweepSpec.setting_names()
                if hasattr(args, name)}
    settings["backend_options"] = backend_class(args.backend).options_from_args(args)
    return settings


def _numpy_on_one_thread() -> None:
    """Import numpy with its OpenBLAS on one thread (its thread per core spins ~50 ms of CPU at
    import; planning does no heavy linear algebra), then give the environment back as it was,
    so that sinter's worker processes and backends start with the caller's."""
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


def cmd_plan(args: argparse.Namespace) -> int:
    _numpy_on_one_thread()
    from qec_kiln import _api

    prepared = _api.plan(args.circuits, log=_log, **_settings(args))
    if args.json:
        print(json.dumps(prepared.to_json(), indent=1))
    else:
        print_plan(prepared)
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    _numpy_on_one_thread()
    from qec_kiln import _api

    def before_start(prepared: PlanResult, todo: list[str], relaunch: Relaunch | None) -> None:
        if not args.json:
            print_plan(prepared, only=set(todo), relaunch=relaunch)

    r = _api.launch(args.circuits, dry_run=args.dry_run, before_start=before_start, log=_log,
                    **_settings(args))
    if args.json:
        print(json.dumps(r.to_json(), indent=1))
    elif r.dry_run is not None:
        print_plan(r.plan)
        out.print()
        out.print(r.dry_run.description, markup=False)
        out.print("\n[bold]dry run:[/] nothing was uploaded or launched")
        return Exit.OK
    elif not r.launched and not r.plan.batches:
        _log(f"next: qec-kiln merge --bucket {r.bucket} --out merged.csv")
    elif not r.launched:
        _print_next_steps(r.bucket, r.sweep)
    else:
        _log(r.message)
        if any(j != b for b, j in r.job_ids.items()):  # a scheduler's own ids: worth showing
            for b, j in r.job_ids.items():
                out.print(f"  {b}: job {j}", markup=False)
        _print_next_steps(r.bucket, r.sweep)
    if r.interrupted:
        return Exit.for_signal(r.signal or 2)  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    if r.failed:
        return Exit.FAILED
    return Exit.CANCELLED if r.cancelled else Exit.OK  # by `qec-kiln cancel`: launch again


def _print_next_steps(bucket_url: str, sweep: str) -> None:
    _log(f"next: qec-kiln status --bucket {bucket_url} --sweep {sweep}\n"
         f"      qec-kiln merge --bucket {bucket_url} --sweep {sweep} --out merged.csv")


def cmd_status(args: argparse.Namespace) -> int:
    from qec_kiln import _api

    reports = _api.status(args.bucket, sweep=args.sweep, backend=args.backend, log=_log)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=1))
        return 0
    for r in reports:
        print_status(r, rows=None if args.all else args.rows)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from qec_kiln import _api

    sweeps = [args.sweep] if args.sweep else _api.sweep_names(args.bucket)
    if len(sweeps) > 1 and not args.all:  # a bare cancel never stops several sweeps by surprise
        raise KilnError(f"{args.bucket} holds {len(sweeps)} sweeps ({', '.join(sweeps)}): give "
                        "--sweep NAME, or --all to cancel every one")
    # Every cancel first, then the report: a reader that leaves (`| head -1`) stops no cancel.
    results = [(sweep, _api.cancel(args.bucket, sweep, backend=args.backend)) for sweep in sweeps]
    for sweep, cancelled in results:  # the bucket's one sweep, or every one with --all
        if cancelled:
            out.print(f"cancelled {len(cancelled)} job(s) of sweep {sweep}: "
                      f"{', '.join(cancelled)}; fragments are kept, `launch` again to resume",
                      markup=False)
        else:
            out.print(f"no running job of sweep {sweep} found", markup=False)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    if args.out == STDOUT and args.json:
        raise KilnError("--out - and --json both write to standard output; give --out a file path")
    if "numpy" not in sys.modules:  # a merge does no linear algebra (it starts no process either)
        # numpy's OpenBLAS starts a thread per core on import, which spins a while: on 2 busy
        # cores that cost ~50 ms of CPU, a fifth of a 200-fragment merge.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from qec_kiln._report.merge import merge_sweeps  # what _api.merge calls, without _api

    report = merge_sweeps(args.bucket, args.out, sweep=args.sweep, skip_bad=args.skip_bad,
                          log=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
        return 0
    text = sys.stderr if args.out == STDOUT else sys.stdout  # the CSV has standard output
    for line in merge_lines(report):
        print(line, file=text)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from qec_kiln import _api

    keys = _api.remove(args.bucket, args.sweep, dry_run=True, backend=args.backend)
    where = f"sweep {args.sweep} from {args.bucket}"
    if args.dry_run:
        for k in keys:
            out.print(f"would remove {k}", markup=False)
        out.print(f"would remove {len(keys)} object(s) of {where}; dry run: nothing removed",
                  markup=False)
        return Exit.OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise KilnError(f"remove {where}: {len(keys)} object(s); give --yes to confirm "
                            "(no terminal to ask on), or --dry-run to list them")
        answer = input(f"remove {len(keys)} object(s) of {where}? This cannot be undone [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.print("nothing removed", markup=False)
            return Exit.OK
    removed = _api.remove(args.bucket, args.sweep, backend=args.backend)
    out.print(f"removed {len(removed)} object(s) of {where}", markup=False)
    return Exit.OK


def cmd_pool(args: argparse.Namespace) -> int:
    from qec_kiln._backends import pool_backend

    name = args.pool_opt or args.name
    if args.name and args.pool_opt and args.name != args.pool_opt:
        raise KilnError(f"qec-kiln pool: two names ({args.name}, --pool {args.pool_opt}); give one")
    for line in pool_backend(args.backend).pool_command(args.action, name):
        out.print(line, markup=False)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from qec_kiln._backends import kiln_home
    from qec_kiln._clean import clean_state

    home = kiln_home().expanduser()
    removed = clean_state(home, older_than_days=args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for folder in removed:
        out.print(f"{verb} {folder}", markup=False)
    out.print(f"{verb} {len(removed)} item(s) of local state (sweep folders, wheels, cached "
              f"fragments) untouched for {args.older_than:g} day(s) "
              f"under {home} (QEC_KILN_HOME); buckets are not touched", markup=False)
    return 0


# ---------------------------------------------------------------------------------------------
# Rendering


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


def print_status(report: StatusReport, rows: int | None = None) -> None:
    """The sweep's table: ``rows`` batches (None: all), failed, running and unfinished ones
    first (``StatusReport.by_urgency``), one line counting the rest, and totals over all."""
    m = report.manifest
    from rich.table import Table

    table = Table(title=f"sweep {m.sweep} ({report.backend or m.backend}): "
                  f"{percent(report.fraction_done)} done",
                  title_justify="left")
    ordered = report.by_urgency()
    shown, rest = (ordered, []) if rows is None else (ordered[:rows], ordered[rows:])
    show_recoveries = any(b.job and b.job.recoveries is not None for b in shown)
    cols = ["batch", "state", "job"] + (["recoveries"] if show_recoveries else [])
    for col in cols + ["shots", "errors", "done", "ETA"]:
        table.add_column(col, justify="left" if col in ("batch", "state", "job") else "right")
    for b in shown:
        eta = b.eta_seconds
        row = [b.batch.id, b.state, b.job.job_id if b.job else "-"]
        if show_recoveries:
            row.append("-" if not b.job or b.job.recoveries is None else str(b.job.recoveries))
        row += [f"{b.shots:,}", f"{b.errors:,}", percent(b.fraction), duration(eta)]
        table.add_row(*row)
    out.print(table)
    if rest:
        out.print(_rest_line(rest), markup=False)
    shots = sum(b.shots for b in report.batches)
    out.print(f"total: {shots:,} shots, {sum(b.errors for b in report.batches):,} errors; "
              f"{len(report.batches) - len(report.unfinished)}/{len(report.batches)} batches done",
              markup=False)
    for b in shown:  # why a job failed, recovers or waits (SkyPilot's reason)
        detail = b.job.detail if b.job else ""
        if b.error and b.error not in detail:  # the last error line of its log
            detail = f"{detail}: {b.error}" if detail else b.error
        if b.job and detail and not b.done:
            rec = "" if b.job.recoveries is None else f", {b.job.recoveries} recoveries"
            out.print(f"{b.batch.id} {b.state} (job {b.job.job_id}{rec}): {detail}",
                      markup=False)
    for w in report.warnings:
        err.print(f"warning: {w}", markup=False)


def _rest_line(rest: list[BatchProgress]) -> str:
    """One line for the batches the table leaves out: ``... and 1,960 finished batches``."""
    if all(b.done and not (b.job and b.job.active) for b in rest):
        what = f"{len(rest):,} finished batch{'es' if len(rest) > 1 else ''}"
    else:
        states: dict[str, int] = {}
        for b in rest:
            states[b.state] = states.get(b.state, 0) + 1
        what = (f"{len(rest):,} more batch{'es' if len(rest) > 1 else ''} ("
                + ", ".join(f"{n:,} {state}" for state, n in states.items()) + ")")
    return f"... and {what}: --all shows every row, --rows N the first N"


def merge_lines(report: MergeReport) -> list[str]:
    """What ``qec-kiln merge`` prints about the merge (the CSV goes to its file)."""
    where = ("nothing (out=None)" if not report.out
             else "standard output" if report.out == STDOUT else report.out)
    if len(report.sweeps) <= 1:
        lines = [f"wrote {where} ({report.rows} rows): {report.reached} of {report.total} "
                 "task(s) reached max_shots or max_errors"]
    else:  # each sweep on its own line: an unfinished one never blurs a finished one's count
        lines = [f"wrote {where} ({report.rows} rows from {len(report.sweeps)} sweeps); "
                 "targets are judged per sweep:"]
        for s in report.sweeps:
            mine = report.of_sweep(s)
            reached = sum(t.reached for t in mine)
            lines.append(f"  sweep {s}: {len(mine)} task(s), {reached} of {len(mine)} reached, "
                         f"{sum(t.shots for t in mine):,} shots toward its targets (with the "
                         "existing rows a top-up counted)"
                         + ("" if reached == len(mine) else
                            f" (not finished: `qec-kiln status --sweep {s}` says why; "
                            f"`qec-kiln remove --sweep {s}` removes it)"))
        lines.append(f"combined {len(report.sweeps)} sweeps into one CSV: a task in several "
                     "sweeps is one row with their shots summed (`--sweep NAME` merges one)"
                     + (":" if report.combined else ""))
        shown = 10  # a big sweep combines thousands of tasks: --json has every one
        for r in report.combined[:shown]:
            shares = " + ".join(f"{s} {n:,}" for s, n in r.shots_per_sweep.items())
            lines.append(f"  {_name(r.metadata)} ({r.decoder}): {r.shots:,} shots = {shares}")
        if len(report.combined) > shown:
            lines.append(f"  ... and {len(report.combined) - shown} more combined task(s) "
                         "(see --json)")
    if report.missing_batches:
        lines.append(f"batches without a fragment yet: {', '.join(report.missing_batches)}")
    several = len(report.sweeps) > 1
    for t in report.not_reached:
        lines.append(f"  not yet: {t.name} ({t.decoder}"
                     f"{', sweep ' + t.sweep if several else ''}): {t.shots:,}/{t.target_shots:,} "
                     f"shots, {t.errors:,}/{t.target_errors:,} errors")
    return lines


def _name(metadata: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in metadata.items())

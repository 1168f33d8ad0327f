"""``qec-kiln launch`` and ``qec_kiln.launch``: plan (as ``plan``, with its flags), upload the
circuits and the manifest, and start every batch that is neither finished nor running;
``LaunchResult`` is what it did. Naming it imports neither sinter nor a backend.

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

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

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
from qec_kiln._command._main_plan import (
    add_backend_arguments,
    add_sweep_arguments,
    circuits_of,
    print_plan,
    settings_of,
    with_settings_signature,
)
from qec_kiln._errors import Exit, Log

if TYPE_CHECKING:
    from qec_kiln._backends import Submission
    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.status import Relaunch

HELP = "plan, upload and start the sweep's batches"

BeforeStart = Callable[["PlanResult", list[str], "Relaunch | None"], None]


def launch(circuits: Circuits, *, dry_run: bool = False, log: Log | None = None,
           before_start: BeforeStart | None = None, **settings: Any) -> LaunchResult:
    """Plan, upload the circuits and the manifest, and start every batch that is neither
    finished nor running (``qec-kiln launch``). Idempotent: the same call again starts only
    what is left. The local backend runs the batches before returning; the others submit jobs
    and return.

    Args:
        circuits: as in :func:`qec_kiln.plan`.
        dry_run: upload and start nothing; the result describes the job files and commands.
        log: as in :func:`qec_kiln.plan`; the backend's progress and failures go there too.
        before_start: called as ``before_start(plan, batch_ids, relaunch)`` just before
            anything starts (the command prints the plan there).
        **settings: :func:`qec_kiln.plan`'s.

    Returns:
        What was launched, or the dry run, with the plan.

    Examples:
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
    from qec_kiln._backends import LaunchRequest
    from qec_kiln._prepare import Fleet, prepare_sweep
    from qec_kiln._report.status import batches_to_start
    from qec_kiln._version import __version__

    # The backend's lines (progress, failures) go to the caller's log; without one only its
    # warnings are issued. A live table where a caller's lines reach a terminal anyway.
    live = log is not None and log is not quiet and sys.stderr.isatty()
    log = log or quiet
    fleet = Fleet.build(settings)
    backend = fleet.backend
    bucket = backend.open_bucket(fleet.bucket_url, must_reach=not dry_run, launching=True,
                                 log=log)
    prepared = prepare_sweep(circuits, fleet, bucket, log, commit=not dry_run)
    m = prepared.manifest
    request = LaunchRequest(
        log=log, live=live, bucket_url=bucket.url, sweep=m.sweep,
        batch_ids=tuple(b.id for b in m.batches), options=fleet.options,
        num_batches_total=len(m.batches), kiln_version=__version__,
        decoders=tuple(m.decoders),
        custom_decoders_module_function=m.custom_decoders_module_function,
        python=m.shipped.python if m.shipped else None,
        node_hour_price=prepared.node_hour_price)
    if not m.batches:
        log(f"nothing to launch: every task already reaches max_shots or max_errors with the "
            f"rows that exist (in {bucket.url} or --existing-data)")
        return LaunchResult(prepared, bucket.url, "nothing to launch",
                            dry_run=DryRun("nothing to sample") if dry_run else None)
    if dry_run:
        dry = DryRun(backend.describe(request), backend.describe_json(request))
        for w in backend.warnings():
            log(f"warning: {w}")
        return LaunchResult(prepared, bucket.url, "dry run: nothing was uploaded or launched",
                            dry_run=dry)
    states = backend.job_states(bucket.url, m.sweep) if prepared.exists else {}
    todo, relaunch = batches_to_start(bucket, m, prepared.exists, states)
    if relaunch is not None:
        log(f"{len(relaunch.done)} batch(es) already finished, {len(relaunch.running)} running")
    if not todo:
        log(f"nothing to launch: sweep {m.sweep!r} has no unfinished, idle batch; "
            "see `qec-kiln status`")
        return LaunchResult(prepared, bucket.url, "nothing to launch", relaunch=relaunch)
    if before_start is not None:
        before_start(prepared, todo, relaunch)
    started = backend.launch(dataclasses.replace(request, batch_ids=tuple(todo)))
    for w in backend.warnings():
        log(f"warning: {w}")
    return LaunchResult(prepared, bucket.url, started.message, launched=todo, submission=started,
                        relaunch=relaunch)


with_settings_signature(launch)


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What a dry run would do: the backend's rendered job files and exact commands."""

    description: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend's dry-run JSON


@dataclasses.dataclass
class LaunchResult:
    """What ``launch`` did: the plan, and either what was submitted or the dry run, and for a
    relaunch the batches it left alone (``relaunch.done``, ``relaunch.running``).

    The submission's fields read through: ``launched``, ``job_ids``, ``failed``, ``cancelled``,
    ``interrupted``, ``signal``.
    """

    plan: PlanResult
    bucket: str
    message: str = ""
    launched: list[str] = dataclasses.field(default_factory=list)  # the batches started now
    submission: Submission | None = None
    dry_run: DryRun | None = None
    relaunch: Relaunch | None = None

    @property
    def sweep(self) -> str:
        return self.plan.sweep

    @property
    def job_ids(self) -> dict[str, str]:
        return self.submission.job_ids if self.submission else {}

    @property
    def failed(self) -> list[str]:
        return self.submission.failed if self.submission else []

    @property
    def cancelled(self) -> list[str]:
        return self.submission.cancelled if self.submission else []

    @property
    def interrupted(self) -> bool:
        return bool(self.submission and self.submission.interrupted)

    @property
    def signal(self) -> int:
        return self.submission.signal if self.submission else 0

    @property
    def done(self) -> list[str]:
        return self.relaunch.done if self.relaunch else []

    @property
    def running(self) -> list[str]:
        return self.relaunch.running if self.relaunch else []

    def to_json(self) -> dict[str, Any]:
        """What ``qec-kiln launch --json`` prints."""
        if self.dry_run is not None:
            data = self.plan.to_json()
            data["backend"] = {"name": self.plan.manifest.backend,
                               "describe": self.dry_run.description, **self.dry_run.details}
            return data
        out: dict[str, Any] = {"sweep": self.sweep, "launched": self.launched,
                               "job_ids": self.job_ids, "message": self.message,
                               "failed": self.failed}
        if self.relaunch is not None and not self.launched:
            out.update(done=self.done, running=self.running)
        return out


def parser() -> Parser:
    p = Parser(prog="qec-kiln launch", description=HELP)
    add_sweep_arguments(p)
    add_backend_arguments(p, "where the batches run")
    p.add_argument("--dry-run", action="store_true",
                   help="show the plan, rendered job files and exact commands; launch nothing")
    return p


def main(argv: Sequence[str]) -> int:
    p = parser()
    args = parse_args(p, argv)
    args.circuits = circuits_of(args, p)
    return run(handle, args)


def handle(args: argparse.Namespace) -> int:
    numpy_on_one_thread()

    def before_start(prepared: PlanResult, todo: list[str], relaunch: Relaunch | None) -> None:
        if not args.json:
            print_plan(prepared, only=set(todo), relaunch=relaunch)

    r = launch(args.circuits, dry_run=args.dry_run, before_start=before_start, log=say,
               **settings_of(args))
    if args.json:
        print(json.dumps(r.to_json(), indent=1))
    elif r.dry_run is not None:
        print_plan(r.plan)
        out.print()
        out.print(r.dry_run.description, markup=False)
        out.print("\n[bold]dry run:[/] nothing was uploaded or launched")
        return Exit.OK
    elif not r.launched and not r.plan.batches:
        say(f"next: qec-kiln merge --bucket {r.bucket} --out merged.csv")
    elif not r.launched:
        print_next_steps(r.bucket, r.sweep)
    else:
        say(r.message)
        if any(j != b for b, j in r.job_ids.items()):  # a scheduler's own ids: worth showing
            for b, j in r.job_ids.items():
                out.print(f"  {b}: job {j}", markup=False)
        print_next_steps(r.bucket, r.sweep)
    if r.interrupted:
        return Exit.for_signal(r.signal or 2)  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    if r.failed:
        return Exit.FAILED
    return Exit.CANCELLED if r.cancelled else Exit.OK  # by `qec-kiln cancel`: launch again


def print_next_steps(bucket_url: str, sweep: str) -> None:
    say(f"next: qec-kiln status --bucket {bucket_url} --sweep {sweep}\n"
         f"      qec-kiln merge --bucket {bucket_url} --sweep {sweep} --out merged.csv")


__all__ = ["DryRun", "LaunchResult", "launch"]

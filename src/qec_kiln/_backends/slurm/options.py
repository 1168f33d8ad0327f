"""The Slurm backend's options and flags (read without importing the backend)."""

from __future__ import annotations

import argparse
import dataclasses

from qec_kiln._backends.options import BackendOptions


@dataclasses.dataclass(frozen=True)
class SlurmOptions(BackendOptions):
    """The Slurm backend's options: the common ones (``cpus`` is ``--cpus-per-task``) and the
    job array's ``#SBATCH`` settings."""

    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None  # e.g. "04:00:00"
    sbatch_template: str | None = None  # template to fill in (default configs/sinter_job.sbatch)
    extra_sbatch: tuple[str, ...] = ()  # extra "#SBATCH ..." option strings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("slurm")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--time", help="time limit per array task, e.g. 04:00:00")
    g.add_argument("--sbatch-template", help="your own copy of configs/sinter_job.sbatch")
    g.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                   help="extra #SBATCH option, e.g. --sbatch-option=--qos=long (repeatable)")


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    g = lambda name: getattr(args, name, None)  # noqa: E731
    return SlurmOptions.from_args(args, partition=g("partition"), account=g("account"),
                                  time_limit=g("time"), sbatch_template=g("sbatch_template"),
                                  extra_sbatch=tuple(g("sbatch_option") or ()))

"""The Slurm backend's options (read without importing the backend); its flags are derived from
the fields (``--slurm-partition``, alias ``--partition``)."""

from __future__ import annotations

import dataclasses

from qec_kiln._backends.options import BackendOptions, option


@dataclasses.dataclass(frozen=True)
class SlurmOptions(BackendOptions):
    """The Slurm backend's options: the common ones (``cpus`` is ``--cpus-per-task``) and the
    job array's ``#SBATCH`` settings."""

    partition: str | None = option(aliases=("--partition",), help="the job array's partition")
    account: str | None = option(aliases=("--account",), help="the account charged")
    time_limit: str | None = option(name="time", aliases=("--time",),
                                    help="time limit per array task, e.g. 04:00:00")
    sbatch_template: str | None = option(aliases=("--sbatch-template",),
                                         help="your own copy of configs/sinter_job.sbatch")
    extra_sbatch: tuple[str, ...] = option(
        (), name="sbatch-option", aliases=("--sbatch-option",), action="append", metavar="OPT",
        help="extra #SBATCH option, e.g. --sbatch-option=--qos=long (repeatable)")

"""The Slurm backend: one job array per launch, ``%K`` throttled, through sbatch/squeue/scancel."""

from qec_kiln._backends.slurm.backend import SlurmBackend, SlurmOptions

__all__ = ["SlurmBackend", "SlurmOptions"]

"""The Slurm backend: one job array per launch, ``%K`` throttled, through sbatch/squeue/scancel.

The package's modules load only when asked for: ``options`` (flags, read by every parser) is
light; ``backend`` imports what the backend needs.
"""

from qec_kiln._backends.plugin import BackendPlugin
from qec_kiln._backends.slurm.options import SlurmOptions

PLUGIN = BackendPlugin("slurm", SlurmOptions, "qec_kiln._backends.slurm.backend:SlurmBackend")

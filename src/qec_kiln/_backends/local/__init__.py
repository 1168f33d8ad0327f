"""The local backend: batches as processes of this machine, on K slots with their own CPUs.

The package's modules load only when asked for: ``options`` (flags, read by every parser) is
light; ``backend`` imports what the backend needs.
"""

from qec_kiln._backends.local.options import LocalOptions
from qec_kiln._backends.plugin import BackendPlugin

PLUGIN = BackendPlugin("local", LocalOptions, "qec_kiln._backends.local.backend:LocalBackend")

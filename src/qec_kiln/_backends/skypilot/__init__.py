"""The SkyPilot backend: one managed job per batch (``num_jobs=N`` in one request), or a pool of
K warm workers; the launcher's own wheel shipped to the nodes.

The package's modules load only when asked for: ``options`` (flags, read by every parser) and
``environment`` (what a node reads) are light; ``backend`` imports what the backend needs.
"""

from qec_kiln._backends.plugin import BackendPlugin
from qec_kiln._backends.skypilot.environment import run_id
from qec_kiln._backends.skypilot.options import SkyPilotOptions

PLUGIN = BackendPlugin("skypilot", SkyPilotOptions,
                       "qec_kiln._backends.skypilot.backend:SkyPilotBackend", run_id=run_id)

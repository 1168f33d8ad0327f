"""The SkyPilot backend: one managed job per batch (``num_jobs=N`` in one request), or a pool of
K warm workers; the launcher's own wheel shipped to the nodes."""

from qec_kiln._backends.skypilot.backend import SkyPilotBackend, SkyPilotOptions

__all__ = ["SkyPilotBackend", "SkyPilotOptions"]

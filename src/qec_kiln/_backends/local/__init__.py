"""The local backend: batches as processes of this machine, on K slots with their own CPUs."""

from qec_kiln._backends.local.backend import LocalBackend, LocalOptions

__all__ = ["LocalBackend", "LocalOptions"]

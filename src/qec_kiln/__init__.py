"""qec-kiln: distribute `sinter collect` sweeps over many machines.

The Python API mirrors the ``qec-kiln`` command: :func:`plan`, :func:`launch`, :func:`status`,
:func:`merge` and :func:`cancel` take the same settings as its flags (see ``qec_kiln._api`` for a
whole sweep as an example). Importing the package loads neither sinter nor SkyPilot.
"""

__version__ = "0.1.0"

from qec_kiln._api import LaunchResult, cancel, launch, merge, plan, status  # noqa: E402
from qec_kiln._errors import KilnError  # noqa: E402

_LAZY = {  # result types whose modules import sinter: loaded when first asked for
    "PlanResult": ("qec_kiln._launch", "PlanResult"),
    "StatusReport": ("qec_kiln._status", "StatusReport"),
    "MergeReport": ("qec_kiln._merge", "MergeReport"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'qec_kiln' has no attribute {name!r}")


__all__ = [
    "KilnError",
    "LaunchResult",
    "MergeReport",
    "PlanResult",
    "StatusReport",
    "__version__",
    "cancel",
    "launch",
    "merge",
    "plan",
    "status",
]

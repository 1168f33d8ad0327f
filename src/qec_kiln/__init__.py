"""qec-kiln: distribute `sinter collect` sweeps over many machines.

The Python API mirrors the ``qec-kiln`` command: :func:`plan`, :func:`launch`, :func:`status`,
:func:`merge`, :func:`cancel` and :func:`remove` take the same settings as its flags, and
:func:`collect` is ``sinter.collect`` over them (tasks in, ``list[sinter.TaskStats]`` out);
see ``qec_kiln._api`` for a whole sweep as an example. Importing the package loads neither
sinter nor SkyPilot.
"""

from typing import TYPE_CHECKING

from qec_kiln._errors import KilnError, KilnWarning  # noqa: E402
from qec_kiln._version import __version__  # noqa: E402

if TYPE_CHECKING:  # what type checkers see; at run time each name loads when first asked for
    from qec_kiln._api import cancel, launch, merge, plan, remove, status
    from qec_kiln._collect import collect
    from qec_kiln._launch_result import LaunchResult
    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.merge import MergeReport
    from qec_kiln._report.status import StatusReport

_LAZY = {  # loaded when first asked for: `qec-kiln merge` imports none of the rest
    **{name: ("qec_kiln._api", name)
       for name in ("cancel", "launch", "merge", "plan", "remove", "status")},
    "LaunchResult": ("qec_kiln._launch_result", "LaunchResult"),
    "collect": ("qec_kiln._collect", "collect"),
    "PlanResult": ("qec_kiln._planning.result", "PlanResult"),  # these three import sinter
    "StatusReport": ("qec_kiln._report.status", "StatusReport"),
    "MergeReport": ("qec_kiln._report.merge", "MergeReport"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'qec_kiln' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "KilnError",
    "KilnWarning",
    "LaunchResult",
    "MergeReport",
    "PlanResult",
    "StatusReport",
    "__version__",
    "cancel",
    "collect",
    "launch",
    "merge",
    "plan",
    "remove",
    "status",
]

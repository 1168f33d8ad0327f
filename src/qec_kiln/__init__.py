"""qec-kiln: distribute `sinter collect` sweeps over many machines.

The Python API mirrors the ``qec-kiln`` command, one function per verb: :func:`plan`,
:func:`launch`, :func:`status`, :func:`merge`, :func:`cancel` and :func:`remove` take the same
settings as its flags, and :func:`collect` and :func:`iter_collect` are ``sinter.collect`` and
``sinter.iter_collect`` over them (the same keywords, tasks in, ``list[sinter.TaskStats]`` or
``sinter.Progress`` out, plus ``bucket=`` and ``backend=``). Each verb lives in
``qec_kiln._command._main_<verb>`` (whose docstring shows a whole sweep for ``launch``).
Importing the package loads neither sinter nor SkyPilot: each name below loads when first
asked for.
"""

from typing import TYPE_CHECKING

from qec_kiln._errors import KilnError, KilnWarning
from qec_kiln._version import __version__

if TYPE_CHECKING:  # what type checkers see
    from qec_kiln._collect import collect, iter_collect
    from qec_kiln._command._main_cancel import cancel
    from qec_kiln._command._main_launch import LaunchResult, launch
    from qec_kiln._command._main_merge import merge
    from qec_kiln._command._main_plan import plan
    from qec_kiln._command._main_remove import remove
    from qec_kiln._command._main_status import status
    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.merge import MergeReport
    from qec_kiln._report.status import StatusReport

_LAZY = {
    "cancel": "qec_kiln._command._main_cancel",
    "collect": "qec_kiln._collect",
    "iter_collect": "qec_kiln._collect",
    "launch": "qec_kiln._command._main_launch",
    "LaunchResult": "qec_kiln._command._main_launch",
    "merge": "qec_kiln._command._main_merge",
    "MergeReport": "qec_kiln._report.merge",  # these three import sinter
    "plan": "qec_kiln._command._main_plan",
    "PlanResult": "qec_kiln._planning.result",
    "remove": "qec_kiln._command._main_remove",
    "status": "qec_kiln._command._main_status",
    "StatusReport": "qec_kiln._report.status",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
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
    "iter_collect",
    "launch",
    "merge",
    "plan",
    "remove",
    "status",
]

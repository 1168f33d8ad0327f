"""The API's functions by their verbs' names, for ``_view/data.py`` (``_api.status``,
``_api.merge``); each loads its verb's module when first asked for. Other code imports them from
``qec_kiln`` or from ``qec_kiln._command._main_<verb>``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qec_kiln._command._main_cancel import cancel
    from qec_kiln._command._main_launch import launch
    from qec_kiln._command._main_merge import merge
    from qec_kiln._command._main_plan import plan
    from qec_kiln._command._main_remove import remove
    from qec_kiln._command._main_status import status

_VERBS = ("cancel", "launch", "merge", "plan", "remove", "status")


def __getattr__(name: str) -> object:
    if name in _VERBS:
        return getattr(importlib.import_module(f"qec_kiln._command._main_{name}"), name)
    raise AttributeError(f"module 'qec_kiln._api' has no attribute {name!r}")


__all__ = ["cancel", "launch", "merge", "plan", "remove", "status"]

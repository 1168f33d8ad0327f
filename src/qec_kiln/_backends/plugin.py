"""What the registry knows of a backend before importing it: its name, its options (and so its
flags), where its class is, and its node-side hook. A backend package exposes one
``BackendPlugin`` and names it in the entry-point group ``qec_kiln.backends``.

    >>> from qec_kiln._backends.options import BackendOptions
    >>> p = BackendPlugin("fake", BackendOptions, "qec_kiln._backends.local.backend:LocalBackend")
    >>> p.backend_class().__name__, p.job_id({"ANY": "1"})
    ('LocalBackend', None)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from qec_kiln._backends.options import BackendOptions

if TYPE_CHECKING:
    from qec_kiln._backends.base import Backend


@dataclasses.dataclass(frozen=True)
class BackendPlugin:
    """A backend as the registry sees it, light to import (every command's parser reads its
    ``options_type`` for the flags; the class is imported only when the backend is used)."""

    #: The backend's name: ``--backend NAME`` and the prefix of its flags (``--NAME-...``).
    name: str
    #: Its options: a subclass of BackendOptions whose fields declare their flags (``option``).
    options_type: type[BackendOptions]
    #: ``"module:Class"`` of its :class:`~qec_kiln._backends.base.Backend` subclass.
    backend: str
    #: Node side: the id of the job this process runs in, when it runs inside one of this
    #: backend's jobs (from its environment variables), else None. A cancel's stop request is
    #: addressed to it (``_node/stop.py``).
    run_id: Callable[[Mapping[str, str]], str | None] | None = None

    def backend_class(self) -> type[Backend]:
        """The backend's class, imported now."""
        module, _, attr = self.backend.partition(":")
        return getattr(importlib.import_module(module), attr)

    def job_id(self, env: Mapping[str, str]) -> str | None:
        """:attr:`run_id` of ``env``; None for a backend without the hook."""
        return self.run_id(env) if self.run_id else None

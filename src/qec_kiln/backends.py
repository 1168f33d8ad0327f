"""What a backend in a package of its own builds on: the public face of ``qec_kiln._backends``.

A third-party backend subclasses :class:`Backend`, declares its options as a
:class:`BackendOptions` dataclass (each field an :func:`option`: its flag ``--NAME-FIELD`` is
derived from it), and exposes a :class:`BackendPlugin` under the entry-point group
``qec_kiln.backends``; docs/backends.md walks through one.

Example:
    >>> from qec_kiln.backends import BackendOptions, BackendPlugin, option
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class MineOptions(BackendOptions):
    ...     zone: str | None = option(None, help="where the jobs run")
    >>> PLUGIN = BackendPlugin("mine", MineOptions, "mine.backend:MineBackend")
    >>> PLUGIN.name
    'mine'
"""

from qec_kiln._backends import (
    Backend,
    BackendOptions,
    BackendPlugin,
    JobState,
    LaunchRequest,
    Submission,
    option,
)

__all__ = ["Backend", "BackendOptions", "BackendPlugin", "JobState", "LaunchRequest", "Submission",
           "option"]

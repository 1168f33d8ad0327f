"""The backends, found through the entry-point group ``qec_kiln.backends`` (each entry a
:class:`BackendPlugin`), as submitit finds its executors. The built-in ones are listed here as
well, so that a source tree without installed metadata still has them; an installed entry of
the same name takes their place. A plugin that fails to load is left out with its reason, so
that one broken package cannot break every command.

    >>> registry = Registry()
    >>> list(registry)[:3]
    ['local', 'skypilot', 'slurm']
    >>> registry["slurm"].options_type.__name__
    'SlurmOptions'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import metadata

from qec_kiln._backends.options import BackendOptions
from qec_kiln._backends.plugin import BackendPlugin
from qec_kiln._plugins import BACKENDS_GROUP, entry_points_of

#: The built-in backends, as their entries in pyproject.toml name them.
BUILT_IN = {
    "local": "qec_kiln._backends.local:PLUGIN",
    "skypilot": "qec_kiln._backends.skypilot:PLUGIN",
    "slurm": "qec_kiln._backends.slurm:PLUGIN",
}
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def _load(name: str, ep: metadata.EntryPoint) -> BackendPlugin:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a backend name (lower-case letters, digits, _)")
    plugin = ep.load()
    if not isinstance(plugin, BackendPlugin):
        raise ValueError(f"{ep.value} is not a qec_kiln BackendPlugin")
    if plugin.name != name:
        raise ValueError(f"{ep.value} is named {plugin.name!r}, not {name!r}")
    if not (isinstance(plugin.options_type, type) and issubclass(plugin.options_type, BackendOptions)):
        raise ValueError(f"{ep.value}: its options_type is not a BackendOptions subclass")
    return plugin


class Registry(Mapping[str, BackendPlugin]):
    """Name -> plugin, read from the entry points once, when first asked: the built-in ones
    first, then the others by name."""

    def __init__(self) -> None:
        self._plugins: dict[str, BackendPlugin] | None = None
        #: Why a plugin of that name was left out.
        self.problems: dict[str, str] = {}

    def _all(self) -> dict[str, BackendPlugin]:
        if self._plugins is None:
            found = {ep.name: ep for ep in entry_points_of(BACKENDS_GROUP)}
            table = {name: found.pop(name) if name in found
                     else metadata.EntryPoint(name, value, BACKENDS_GROUP)
                     for name, value in BUILT_IN.items()}
            table.update(sorted(found.items()))
            plugins = {}
            for name, ep in table.items():
                try:
                    plugins[name] = _load(name, ep)
                except Exception as e:  # a broken package: left out, its reason kept
                    self.problems[name] = f"{type(e).__name__}: {e}"
            self._plugins = plugins
        return self._plugins

    def __getitem__(self, name: str) -> BackendPlugin:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

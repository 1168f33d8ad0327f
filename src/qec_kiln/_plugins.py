"""The entry-point group through which qec-kiln finds its backends, built-in or third-party
(``[project.entry-points."qec_kiln.backends"]``: ``NAME = "package.module:PLUGIN"``, a
``qec_kiln.backends.BackendPlugin``). The backends' registry reads it, and so does a node
asking which backend's job it runs in; neither names a backend here."""

from __future__ import annotations

from importlib import metadata

BACKENDS_GROUP = "qec_kiln.backends"


def entry_points_of(group: str) -> list[metadata.EntryPoint]:
    """The installed entry points of ``group``, one per name (the first found on sys.path)."""
    seen: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        seen.setdefault(ep.name, ep)
    return list(seen.values())

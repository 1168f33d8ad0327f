"""A third-party backend as a package of its own, for the tests: ``--backend fake`` with its own
flags (``--fake-zone``, ``--fake-image``), found through the entry-point group
``qec_kiln.backends``. Nothing of qec-kiln is edited for it: ``tests/test_backend_plugins.py``
writes its ``.dist-info`` (``entry_points.txt``: ``fake = kiln_fake_backend:PLUGIN``) and puts
this folder on the PYTHONPATH of a real ``qec-kiln``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from qec_kiln.backends import BackendOptions, BackendPlugin, option


@dataclasses.dataclass(frozen=True)
class FakeOptions(BackendOptions):
    """Where the fake jobs run."""

    zone: str = option("nowhere", help="the fake zone", metavar="ZONE")
    # An alias that SkyPilot's --image already has: left out, --fake-image still works.
    image: str | None = option(aliases=("--image",), help="a fake image")


def run_id(env: Mapping[str, str]) -> str | None:
    """A node inside a fake job knows its id from FAKE_JOB_ID."""
    return env.get("FAKE_JOB_ID") or None


PLUGIN = BackendPlugin("fake", FakeOptions, "kiln_fake_backend.backend:FakeBackend",
                       run_id=run_id)

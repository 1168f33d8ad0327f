"""What a node knows of SkyPilot from its environment (read by run-batch, so light).

>>> run_id({RUN_ID_ENV: " 7 "}), run_id({})
('7', None)
"""

from __future__ import annotations

from collections.abc import Mapping

#: The variable that names the run's job: SkyPilot sets it on every node of a managed job, the
#: same across recoveries.
RUN_ID_ENV = "SKYPILOT_MANAGED_JOB_ID"


def run_id(env: Mapping[str, str]) -> str | None:
    """The managed job's id, or None outside a SkyPilot managed job."""
    return env.get(RUN_ID_ENV, "").strip() or None

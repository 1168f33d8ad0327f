"""A batch's job as its backend sees it: the vocabulary ``status`` joins with the fragments."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class JobState:
    """A batch's job as its backend sees it."""

    batch_id: str
    state: str  # e.g. RUNNING, PENDING, SUCCEEDED, FAILED, CANCELLED, RECOVERING, UNKNOWN
    job_id: str = ""
    recoveries: int | None = None
    detail: str = ""

    @property
    def active(self) -> bool:
        return is_active(self.state)


ACTIVE_STATES = frozenset(
    {"PENDING", "STARTING", "RUNNING", "RECOVERING", "SUBMITTED", "CONFIGURING", "REQUEUED",
     "CANCELLING"}
)


def is_active(state: str) -> bool:
    """Whether a job in ``state`` (JobState's vocabulary) may still run or start.

    >>> is_active("requeued"), is_active("FAILED")
    (True, False)
    """
    return state.upper() in ACTIVE_STATES

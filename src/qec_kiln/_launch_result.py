"""What ``qec_kiln.launch`` returns (``LaunchResult``): light, so that naming it imports
neither sinter nor a backend."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qec_kiln._backends import Submission
    from qec_kiln._planning.result import PlanResult
    from qec_kiln._report.status import Relaunch


@dataclasses.dataclass(frozen=True)
class DryRun:
    """What a dry run would do: the backend's rendered job files and exact commands."""

    description: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend's dry-run JSON


@dataclasses.dataclass
class LaunchResult:
    """What ``launch`` did: the plan, and either what was submitted or the dry run, and for a
    relaunch the batches it left alone (``relaunch.done``, ``relaunch.running``).

    The submission's fields read through: ``launched``, ``job_ids``, ``failed``, ``cancelled``,
    ``interrupted``, ``signal``.
    """

    plan: PlanResult
    bucket: str
    message: str = ""
    launched: list[str] = dataclasses.field(default_factory=list)  # the batches started now
    submission: Submission | None = None
    dry_run: DryRun | None = None
    relaunch: Relaunch | None = None

    @property
    def sweep(self) -> str:
        return self.plan.sweep

    @property
    def job_ids(self) -> dict[str, str]:
        return self.submission.job_ids if self.submission else {}

    @property
    def failed(self) -> list[str]:
        return self.submission.failed if self.submission else []

    @property
    def cancelled(self) -> list[str]:
        return self.submission.cancelled if self.submission else []

    @property
    def interrupted(self) -> bool:
        return bool(self.submission and self.submission.interrupted)

    @property
    def signal(self) -> int:
        return self.submission.signal if self.submission else 0

    @property
    def done(self) -> list[str]:
        return self.relaunch.done if self.relaunch else []

    @property
    def running(self) -> list[str]:
        return self.relaunch.running if self.relaunch else []

    def to_json(self) -> dict[str, Any]:
        """What ``qec-kiln launch --json`` prints."""
        if self.dry_run is not None:
            data = self.plan.to_json()
            data["backend"] = {"name": self.plan.manifest.backend,
                               "describe": self.dry_run.description, **self.dry_run.details}
            return data
        out: dict[str, Any] = {"sweep": self.sweep, "launched": self.launched,
                               "job_ids": self.job_ids, "message": self.message,
                               "failed": self.failed}
        if self.relaunch is not None and not self.launched:
            out.update(done=self.done, running=self.running)
        return out


__all__ = ["DryRun", "LaunchResult"]

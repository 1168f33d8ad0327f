"""A cancel's stop request, through the bucket: how a graceful cancel reaches run-batch where the
engine's own signal does not.

SkyPilot 0.14.1's graceful cancel signals the job's driver, not the task: on its Slurm infra the
driver's SIGTERM handler runs ``scancel <step>`` and Slurm kills a cancelled step with SIGKILL at
once (measured: no SIGTERM reaches the task), and Kubernetes pods are deleted with grace period 0.
run-batch would lose what sinter wrote since the last periodic upload. So ``qec-kiln cancel``
first writes ``<sweep>/stop/<job id>`` for every running job (:func:`request_stop`); run-batch,
which knows its job id (``SKYPILOT_MANAGED_JOB_ID``), looks for it at every sync
(:meth:`StopRequest.asked`), stops sinter as on SIGTERM, makes its final upload, writes
``<sweep>/stop/<job id>.stopped`` and holds (:meth:`StopRequest.acknowledge`) until the cancel
tears the job down. Only then does the cancel ask SkyPilot. A job id is never reused, so an old
request cannot stop a later run of the same batch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping

from qec_kiln._errors import StorageError
from qec_kiln._storage import QUICK_RETRY, Bucket

#: The variable that names the run's job (SkyPilot sets it on every node of a managed job, the
#: same across recoveries).
RUN_ID_ENV = "SKYPILOT_MANAGED_JOB_ID"
#: How long a stopped run-batch waits to be torn down before it exits on its own.
HOLD_SECONDS = 300.0


def stop_key(sweep: str, run_id: str) -> str:
    """
    >>> stop_key("s", "12"), stop_key("s", "12") + ".stopped"
    ('s/stop/12', 's/stop/12.stopped')
    """
    return f"{sweep}/stop/{run_id}"


def run_id_from(env: Mapping[str, str]) -> str | None:
    """The job id of this run, or None outside a managed job (or an id unfit for a key).

    >>> run_id_from({RUN_ID_ENV: "7"}), run_id_from({}), run_id_from({RUN_ID_ENV: "a/b"})
    ('7', None, None)
    """
    value = env.get(RUN_ID_ENV, "").strip()
    return value if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value) else None


class StopRequest:
    """run-batch's side: is a stop asked for this run, and saying that it stopped."""

    def __init__(self, bucket: Bucket, sweep: str, env: Mapping[str, str] | None = None):
        self.bucket = bucket
        self.run_id = run_id_from(os.environ if env is None else env)
        self.key = stop_key(sweep, self.run_id) if self.run_id else None
        self.seen = False

    def asked(self) -> bool:
        """True once ``<sweep>/stop/<job id>`` exists (one HEAD per call; an error is a no)."""
        if self.key and not self.seen:
            try:
                self.seen = self.bucket.exists(self.key, retry=QUICK_RETRY)
            except StorageError:
                return False
        return self.seen

    def acknowledge(self, uploaded: int, log: Callable[[str], None]) -> bool:
        """After the final upload: write ``<key>.stopped``; True when a stop was asked and said."""
        if not (self.key and self.seen):
            return False
        try:
            self.bucket.write_bytes(self.key + ".stopped", f"{uploaded}\n".encode(),
                                    retry=QUICK_RETRY)
        except StorageError as ex:
            log(f"warning: could not acknowledge the stop request: {ex}")
            return False
        log(f"stopped as a cancel asked ({uploaded} bytes uploaded); waiting to be torn down")
        return True

    @staticmethod
    def hold(signals: list[int], seconds: float = HOLD_SECONDS) -> None:
        """Wait for the teardown (a signal ends the wait), at most ``seconds``: exiting first
        would end the job FAILED before the cancel reaches it."""
        deadline = time.monotonic() + seconds
        while not signals and time.monotonic() < deadline:
            time.sleep(0.5)


def request_stop(bucket: Bucket, sweep: str, run_ids: Iterable[str], timeout: float,
                 poll: float = 1.0) -> list[str]:
    """Ask ``run_ids`` to stop and wait up to ``timeout`` s until each says it did; return those
    that did (a run that never looks, e.g. one still setting up, is left to the engine)."""
    ids = [i for i in dict.fromkeys(str(r) for r in run_ids) if run_id_from({RUN_ID_ENV: i})]
    for run_id in ids:
        bucket.write_bytes(stop_key(sweep, run_id), b"stop\n")
    deadline = time.monotonic() + timeout
    done: list[str] = []
    while True:
        done = [i for i in ids if i in done or _exists(bucket, stop_key(sweep, i) + ".stopped")]
        if len(done) == len(ids) or time.monotonic() >= deadline:
            return done
        time.sleep(poll)


def _exists(bucket: Bucket, key: str) -> bool:
    try:
        return bucket.exists(key, retry=QUICK_RETRY)
    except StorageError:
        return False

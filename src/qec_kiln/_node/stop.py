"""A cancel's stop request, through the bucket: how a graceful cancel reaches run-batch where the
engine's own signal does not.

SkyPilot 0.14.1's graceful cancel signals the job's driver, not the task: on its Slurm infra the
driver's SIGTERM handler runs ``scancel <step>`` and Slurm kills a cancelled step with SIGKILL at
once (measured: no SIGTERM reaches the task), and Kubernetes pods are deleted with grace period 0.
run-batch would lose what sinter wrote since the last periodic upload. So ``qec-kiln cancel``
first writes ``<sweep>/stop/<job id>`` for every running job (:func:`request_stop`); run-batch,
which knows its job id (from its backend's environment), looks for it at every sync
(:meth:`StopRequest.asked`), stops sinter as on SIGTERM, makes its final upload, writes
``<sweep>/stop/<job id>.stopped`` and holds (:meth:`StopRequest.acknowledge`) until the cancel
tears the job down. Only then does the cancel ask SkyPilot. A job id is never reused, so an old
request cannot stop a later run of the same batch.

Which job this run is comes from the backends' node-side hooks (``BackendPlugin.run_id``, found
through the entry-point group ``qec_kiln.backends``; SkyPilot's reads its managed job id): this
module names no backend.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from qec_kiln._errors import Log, StorageError
from qec_kiln._plugins import BACKENDS_GROUP, entry_points_of
from qec_kiln._storage import QUICK_RETRY, Bucket

#: A backend's node-side hook: the id of the job this process runs in, or None outside one.
RunIdHook = Callable[[Mapping[str, str]], "str | None"]

#: How long a stopped run-batch waits to be torn down before it exits on its own.
HOLD_SECONDS = 300.0


def stop_key(sweep: str, run_id: str) -> str:
    """
    >>> stop_key("s", "12"), stop_key("s", "12") + ".stopped"
    ('s/stop/12', 's/stop/12.stopped')
    """
    return f"{sweep}/stop/{run_id}"


def run_id_hooks() -> list[RunIdHook]:
    """Every installed backend's node-side hook (read when a run first asks; a plugin that
    cannot be loaded has none)."""
    hooks = []
    for ep in entry_points_of(BACKENDS_GROUP):
        try:
            hook = getattr(ep.load(), "run_id", None)
        except Exception:  # a broken plug-in must not stop a batch
            continue
        if callable(hook):
            hooks.append(hook)
    return hooks


def valid_run_id(value: str | None) -> str | None:
    """``value`` when it is fit for a key, else None.

    >>> valid_run_id("7"), valid_run_id(""), valid_run_id("a/b")
    ('7', None, None)
    """
    value = (value or "").strip()
    return value if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value) else None


def run_id_from(env: Mapping[str, str], hooks: Sequence[RunIdHook] | None = None) -> str | None:
    """The job id of this run: the first backend's hook that knows it (outside a job, or an id
    unfit for a key, None).

    >>> run_id_from({"JOB": "7"}, [lambda env: env.get("JOB")]), run_id_from({}, [])
    ('7', None)
    >>> run_id_from({"JOB": "7"}, [lambda env: env["BROKEN"], lambda env: env.get("JOB")])
    '7'

    """
    for hook in run_id_hooks() if hooks is None else hooks:
        try:
            value = hook(env)
        except Exception:  # a broken plug-in's hook must not stop a batch: the next one asks
            continue
        if value is not None:
            return valid_run_id(value)
    return None


class StopRequest:
    """run-batch's side: is a stop asked for this run, and saying that it stopped."""

    def __init__(self, bucket: Bucket, sweep: str, env: Mapping[str, str] | None = None,
                 hooks: Sequence[RunIdHook] | None = None):
        self.bucket = bucket
        self.sweep = sweep
        self.env = os.environ if env is None else env
        self.hooks = hooks
        self._run_id: str | None = None
        self._known = False
        self.seen = False

    @property
    def run_id(self) -> str | None:
        """This run's job id, asked of the backends' hooks once, at the first use (after sinter
        has started: run-batch imports no backend before)."""
        if not self._known:
            self._run_id, self._known = run_id_from(self.env, self.hooks), True
        return self._run_id

    @property
    def key(self) -> str | None:
        """``<sweep>/stop/<job id>``; None outside a job whose backend can be asked."""
        return stop_key(self.sweep, self.run_id) if self.run_id else None

    def asked(self) -> bool:
        """True once ``<sweep>/stop/<job id>`` exists (one HEAD per call; an error is a no)."""
        if self.key and not self.seen:
            try:
                self.seen = self.bucket.exists(self.key, retry=QUICK_RETRY)
            except StorageError:
                return False
        return self.seen

    def acknowledge(self, uploaded: int, log: Log) -> bool:
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
    ids = [i for i in dict.fromkeys(str(r) for r in run_ids) if valid_run_id(i)]
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

"""One writer per batch: a lease object ``<sweep>/leases/<batch>.json`` in the bucket.

A run-batch takes its batch's lease with a conditional create before it touches anything, renews
it (compare-and-swap on the version it last wrote) well before it expires, and releases it at the
end. A second run-batch of the same batch finds the lease held and stands down; the lease of a
runner that died expires after ``seconds`` and may then be taken over (again by compare-and-swap,
so of two runners taking over at once, one wins). Expiry times are wall-clock (``time.time()``):
nodes' clocks must agree to well within a lease period (NTP does).

The lease only keeps a second runner from starting work; what guarantees that nothing is counted
twice is that every fragment upload is a compare-and-swap too (see ``_node.sync.FragmentSync``).

The bucket's planning lock (:func:`plan_lock`) is a lease of the same kind, for launches: a
top-up plans each task ``target - existing``, so two launches planning the same tasks at once
would both count the same rows and together sample past the targets. A launch holds
``_kiln/plan-lock.json`` from counting the bucket's rows to its manifest's commit, so the later
one sees the earlier sweep (whose unfinished work then refuses the plan).

Example:
    >>> import tempfile
    >>> from qec_kiln._storage import open_bucket
    >>> bucket = open_bucket(tempfile.mkdtemp())
    >>> lease = acquire(bucket, "s/leases/b000.json", seconds=60)
    >>> acquire(bucket, "s/leases/b000.json", seconds=60, watch=False)
    Traceback (most recent call last):
    ...
    qec_kiln._sweep.lease.LeaseHeld: ...b000.json: another run-batch of the same batch is running ...
    >>> renew(lease); release(lease)
    >>> acquire(bucket, "s/leases/b000.json", seconds=60).owner == lease.owner
    False
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator

from qec_kiln._errors import Exit, KilnError, Log, ObjectNotFound, PreconditionFailed, StorageError
from qec_kiln._storage import Bucket, RetryPolicy


def lease_key(sweep: str, batch: str) -> str:
    """The key of a batch's lease.

    >>> lease_key("s1", "b003")
    's1/leases/b003.json'
    """
    return f"{sweep}/leases/{batch}.json"


class LeaseHeld(KilnError):
    """Another live run-batch holds the batch's lease."""

    exit_code = Exit.CONFLICT


@dataclasses.dataclass
class Lease:
    """A lease this process holds: ``version`` is what it last wrote (for the next CAS)."""

    bucket: Bucket
    key: str
    owner: dict
    seconds: float
    version: str
    expires: float
    created: bool = False  # this process created the lease object (it was not there before)
    previous: bytes | None = None  # what the object held before this process took it over


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}


def _body(owner: dict, expires: float, released: bool = False) -> bytes:
    return json.dumps({"owner": owner, "expires": round(expires, 3), "released": released},
                      sort_keys=True).encode()


def _describe(holder: dict, now: float) -> str:
    owner = holder.get("owner") or {}
    left = float(holder.get("expires", 0)) - now
    return (f"held by pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
            f"for {max(left, 0):.0f} s more unless renewed")


def acquire(bucket: Bucket, key: str, *, seconds: float, retry: RetryPolicy | None = None,
            watch: bool = True, poll: float = 1.0,
            clock: Callable[[], float] = time.time) -> Lease:
    """Take the lease at ``key``: create it, or take over a released or expired one.

    A lease held by a pid that no longer runs on this host is free at once. With ``watch``, a
    lease held by someone else is watched until it expires: a holder that renews it is alive
    (LeaseHeld is raised within one renewal period); one that does not is dead, and its lease
    is taken over when it expires (a job restarted on a new machine resumes after at most
    ``seconds``). Raises LeaseHeld (one line: who holds it) when a live runner has it.
    """
    owner = _owner()
    for _ in range(3):  # a lease deleted between our create and our read: try again
        body = _body(owner, clock() + seconds)
        try:
            version = bucket.write_if(key, body, None, retry=retry)
            return Lease(bucket, key, owner, seconds, version, clock() + seconds, created=True)
        except PreconditionFailed:
            pass
        try:
            current, holder, raw = _read_raw(bucket, key, retry)
            while not _free(holder, clock()):
                if not watch:
                    raise _held(bucket, key, holder, clock())
                time.sleep(max(0.01, min(poll, float(holder["expires"]) - clock())))
                seen = current
                current, holder, raw = _read_raw(bucket, key, retry)
                if current != seen and not _free(holder, clock()):
                    raise _held(bucket, key, holder, clock())  # renewed: its runner is alive
        except ObjectNotFound:
            continue
        body = _body(owner, clock() + seconds)
        try:
            version = bucket.write_if(key, body, current, retry=retry)
        except PreconditionFailed:
            raise LeaseHeld(
                f"{bucket.url_for(key)}: another run-batch of the same batch is running (it took "
                "over the expired lease first); this one exits without touching the batch"
            ) from None
        return Lease(bucket, key, owner, seconds, version, clock() + seconds, previous=raw)
    raise LeaseHeld(f"{bucket.url_for(key)}: the lease keeps disappearing; is someone deleting "
                    "leases? this run-batch exits without touching the batch")


def _read(bucket: Bucket, key: str, retry: RetryPolicy | None) -> tuple[str, dict]:
    version, holder, _ = _read_raw(bucket, key, retry)
    return version, holder


def _read_raw(bucket: Bucket, key: str, retry: RetryPolicy | None) -> tuple[str, dict, bytes]:
    data, version = bucket.read_versioned(key, retry=retry)
    try:
        holder = json.loads(data)
        float(holder["expires"])
    except (ValueError, KeyError, TypeError):
        holder = {"expires": 0.0}  # unreadable: nobody can renew it either
    return version, holder, data


def _free(holder: dict, now: float) -> bool:
    """Whether a lease may be taken over: released, expired, or its runner is gone from here."""
    if holder.get("released") or float(holder["expires"]) < now:
        return True
    owner = holder.get("owner") or {}
    pid = owner.get("pid")
    if owner.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True  # killed (a SIGKILL, a kill loop): restart at once
        except PermissionError:
            pass
    return False


def is_held(bucket: Bucket, key: str, *, retry: RetryPolicy | None = None,
            clock: Callable[[], float] = time.time) -> bool:
    """Whether a live runner holds the lease at ``key`` (neither released, expired, nor of a
    pid gone from this host): its batch may still write rows.

    >>> import tempfile
    >>> from qec_kiln._storage import open_bucket
    >>> bucket = open_bucket(tempfile.mkdtemp())
    >>> lease = acquire(bucket, "s/leases/b000.json", seconds=60)
    >>> is_held(bucket, "s/leases/b000.json"), is_held(bucket, "s/leases/b001.json")
    (True, False)
    """
    try:
        _, holder = _read(bucket, key, retry)
    except ObjectNotFound:
        return False
    owner = holder.get("owner") or {}
    if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        return not holder.get("released") and float(holder["expires"]) >= clock()
    return not _free(holder, clock())
def live_holder(bucket: Bucket, key: str, *, clock: Callable[[], float] = time.time,
                retry: RetryPolicy | None = None) -> str | None:
    """Who holds the lease at ``key`` now ("held by pid 12 on host, for 50 s more ..."), or None
    when nobody does (no lease, released, expired, or its runner gone from this host)."""
    try:
        _, holder = _read(bucket, key, retry)
    except ObjectNotFound:
        return None
    now = clock()
    return None if _free(holder, now) else _describe(holder, now)


def _held(bucket: Bucket, key: str, holder: dict, now: float) -> LeaseHeld:
    return LeaseHeld(
        f"{bucket.url_for(key)}: another run-batch of the same batch is running "
        f"({_describe(holder, now)}); this one exits without touching the batch"
    )


def renew(lease: Lease, *, retry: RetryPolicy | None = None,
          clock: Callable[[], float] = time.time) -> None:
    """Extend the lease by ``lease.seconds`` from now. Raises PreconditionFailed when someone
    else took it over (this runner lost the batch), StorageError when the bucket failed."""
    expires = clock() + lease.seconds
    lease.version = lease.bucket.write_if(lease.key, _body(lease.owner, expires), lease.version,
                                          retry=retry)
    lease.expires = expires


def release(lease: Lease, *, retry: RetryPolicy | None = None, undo: bool = False,
            anonymous: bool = False) -> None:
    """Mark the lease free (best effort: else it simply expires), by compare-and-swap on the
    version this process last wrote (a lease another process took over is left alone).

    ``undo``: the run never started (bad input); a lease this process created is deleted, so
    the bucket is left as it was. ``anonymous``: the released lease names no holder, so every
    release leaves the same bytes (the bucket's planning lock, kept between launches).
    """
    if undo and lease.created:
        with contextlib.suppress(StorageError):
            lease.bucket.delete(lease.key, retry=retry)
        return
    if undo and lease.previous is not None:
        with contextlib.suppress(StorageError):
            lease.version = lease.bucket.write_if(lease.key, lease.previous, lease.version,
                                                  retry=retry)
        return
    with contextlib.suppress(StorageError):
        lease.version = lease.bucket.write_if(
            lease.key, _body({} if anonymous else lease.owner, 0.0, released=True),
            lease.version, retry=retry)


#: The bucket's planning lock (not a sweep folder: sweep names start with a letter or digit).
PLAN_LOCK_KEY = "_kiln/plan-lock.json"


class PlanLock:
    """The bucket's planning lock while this launch holds it: renewed from a thread every
    third of its lease, so that counting a big bucket or uploading many circuits never outlasts
    it. :meth:`check` before the commit: a lock lost meanwhile (taken over after renewals
    failed for a whole lease) refuses the commit, since another launch may have counted too."""

    def __init__(self, lease: Lease):
        self.lease = lease
        self.lost = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="kiln-plan-lock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease.seconds / 3):
            try:
                renew(self.lease)
            except PreconditionFailed:
                self.lost = "another launch took it over"
                return
            except StorageError:
                continue  # the lease stays valid until it expires: try again next period

    def check(self) -> None:
        """Raise KilnError unless this launch still holds the lock."""
        if self.lost or time.time() >= self.lease.expires:
            why = self.lost or "it expired: the bucket refused its renewals"
            raise KilnError(f"{self.lease.bucket.url_for(PLAN_LOCK_KEY)}: this launch lost the "
                            f"bucket's planning lock ({why}); nothing was committed: launch "
                            "again")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if not self.lost:
            release(self.lease, anonymous=True)  # by compare-and-swap: never another's lock


@contextlib.contextmanager
def plan_lock(bucket: Bucket, log: Log, *, seconds: float = 300.0, wait: float = 900.0
              ) -> Iterator[PlanLock]:
    """Hold the bucket's planning lock: one launch at a time counts what exists and commits
    its plan. Waits (saying so once) while another launch holds it. The lock object stays in
    the bucket, released (free for the next launch), when this ends."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            lease = acquire(bucket, PLAN_LOCK_KEY, seconds=seconds, watch=False)
            break
        except LeaseHeld:
            if not told:
                log(f"waiting for another launch that is planning in {bucket.url}")
                told = True
            if time.monotonic() > deadline:
                raise KilnError(f"{bucket.url_for(PLAN_LOCK_KEY)}: another launch has been "
                                f"planning for over {wait:g} s; try again later") from None
            time.sleep(0.5)
    lock = PlanLock(lease)
    try:
        yield lock
    finally:
        lock.release()



__all__ = ["PLAN_LOCK_KEY", "Lease", "LeaseHeld", "PlanLock", "acquire", "is_held", "lease_key",
           "live_holder", "plan_lock", "release", "renew"]

"""``qec-kiln run-batch``: what a node runs.

It restores the batch's fragment from the bucket, runs the **unmodified** ``sinter collect`` (one
invocation per set of targets, an argv list, never a shell) with ``--save_resume_filepath`` on a
local file, and uploads complete lines of that file to ``<sweep>/fragments/<batch>.csv`` every
``sync_seconds`` and at exit. The object in the bucket is only ever replaced by a longer prefix of
the same resume file, so a restart (a recovered spot VM, a requeued Slurm task) resumes where the
last upload ended: at most one sync period of work is lost and nothing is counted twice.

Example (on a node)::

    qec-kiln run-batch --bucket s3://my-results --sweep surface-3f2a --batch b003
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

from qec_kiln._argtypes import SYNC_SECONDS
from qec_kiln._atomic import atomic_write
from qec_kiln._errors import Exit, KilnError, Log, ObjectNotFound, PreconditionFailed, StorageError
from qec_kiln._node.processes import Forked, kill_stale_group, stop_group
from qec_kiln._node.shipped import LOADER, prepare_shipped
from qec_kiln._node.sinter_cmd import metadata_func, sinter_collect_argv, start_sinter
from qec_kiln._node.stop import StopRequest
from qec_kiln._node.sync import FragmentSync, RowSplitter, rows_of
from qec_kiln._node.workers import allowed_cpus, format_cpus
from qec_kiln._storage import PATIENT_RETRY, QUICK_RETRY, Bucket, RetryPolicy, open_bucket
from qec_kiln._sweep.batches import Batch, Shard, disjoint_groups, sinter_runs
from qec_kiln._sweep.fragments import HEADER_LINE, complete_lines, parse_fragment
from qec_kiln._sweep.lease import Lease, LeaseHeld, acquire, lease_key, release, renew
from qec_kiln._sweep.manifest import (
    Manifest,
    circuit_key,
    fragment_key,
    load_manifest,
    log_key,
    package_versions,
)

#: In each batch's work folder, after a run-batch of several: that batch's exit code.
BATCH_EXIT = "run-batch.exit"
#: Logs are best effort: one short attempt, so a bucket outage does not slow the fragment syncs.
LOG_RETRY = RetryPolicy(attempts=1, connect_timeout=3.0, read_timeout=10.0)
#: Log bytes kept in ``logs/<batch>.log``.
LOG_TAIL_BYTES = 64_000


class _Stop(Exception):
    """Raised in the main thread by the SIGTERM/SIGINT handler."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def default_work_dir() -> pathlib.Path:
    env = os.environ.get("QEC_KILN_WORK_DIR")
    return pathlib.Path(env) if env else pathlib.Path(tempfile.gettempdir()) / "qec-kiln-work"


def run_batch(
    bucket_url: str,
    sweep: str,
    batch_id: str | Sequence[str],
    *,
    processes: int | None = None,
    sync_seconds: float = SYNC_SECONDS,
    work_dir: str | pathlib.Path | None = None,
    out: Log | None = None,
    lease_seconds: float | None = None,
    cpus_allowed: str | None = None,
) -> int:
    """Run one batch (or several) to completion, or until SIGTERM/SIGINT; return the exit code.

    ``lease_seconds``: how long the batch's lease lasts unless renewed (default: four sync
    periods, at least 60 s); a runner that dies leaves the batch to others after that long.
    sinter runs on ``cpus_allowed`` (a CPU list like ``0-3``), else on this process's CPUs
    (``os.sched_getaffinity``: Slurm's cpuset), with one process per CPU unless ``processes``.

    Several ``batch_id`` (one local worker's queue, ``run-batch --all``): consecutive batches
    that share no task run together, as one sinter per :func:`sinter_runs` of their shards
    writing one resume file. Each batch keeps its own lease and its own fragment (its own rows:
    ``_node/sync.py``: ``RowSplitter``), so they pay one start-up and one tail instead of one each.
    """
    ids = [batch_id] if isinstance(batch_id, str) else list(batch_id)
    cpus = allowed_cpus(cpus_allowed)
    bucket = open_bucket(bucket_url)
    manifest = load_manifest(bucket, sweep)
    _check_versions(manifest)
    batches = [manifest.plan.batch(b) for b in ids]
    root = (pathlib.Path(work_dir) if work_dir else default_work_dir()) / sweep
    # Shipped decoder objects: checked before any lease is taken or anything sampled.
    sinter_env = prepare_shipped(bucket, manifest, root / "decoders")
    say = out or (lambda s: print(s, file=sys.stderr, flush=True))
    if lease_seconds is None:
        lease_seconds = max(60.0, 4 * sync_seconds)
    codes: dict[str, int] = {}
    for group in disjoint_groups(batches):
        codes.update(_run_group(bucket, manifest, group, root, say, processes, sync_seconds,
                                lease_seconds, cpus, sinter_env))
        if any(c >= 128 for c in codes.values()):  # stopped by a signal (or a cancel): the rest
            break  # waits for the next launch
    if len(ids) > 1:  # how each batch ended, for the local queue (one exit code for them all)
        for b, code in codes.items():
            atomic_write(root / b / BATCH_EXIT, f"{code}\n")
    stopped = [c for c in codes.values() if c >= 128]
    return stopped[0] if stopped else next((c for c in codes.values() if c), 0)


def _run_group(bucket: Bucket, manifest: Manifest, group: list[Batch], root: pathlib.Path,
               say: Log, processes: int | None, sync_seconds: float,
               lease_seconds: float, cpus: Sequence[int],
               sinter_env: dict[str, str] | None = None) -> dict[str, int]:
    """Lock, lease and run batches that share no task (one sinter for them all); each one's
    exit code (``Exit.CONFLICT`` where another runner holds it)."""
    locks: list[int] = []
    mine: list[Batch] = []
    codes: dict[str, int] = {}
    for b in group:
        work = root / b.id
        work.mkdir(parents=True, exist_ok=True)
        # One runner per work folder (its resume file and sinter's pgid file are this runner's):
        # the lock dies with its holder, so a leftover one never blocks a restart.
        fd = os.open(work / "run-batch.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            say(f"{b.id}: another run-batch of the same batch is running on this machine "
                f"(work folder {work} is locked); this one exits without touching the batch")
            codes[b.id] = Exit.CONFLICT
            continue
        locks.append(fd)
        mine.append(b)
    if not mine:
        return codes
    names = ",".join(b.id for b in mine)
    log_path = root / mine[0].id / "run-batch.log"
    log_file = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (closed below)

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {names}: {msg}"
        log_file.write(line + "\n")
        say(line)

    leases: list[Lease] = []
    try:
        leased: list[Batch] = []
        for b in mine:
            try:
                leases.append(acquire(bucket, lease_key(manifest.sweep, b.id), seconds=lease_seconds))
                leased.append(b)
            except LeaseHeld as held:
                log(f"error: {held}")
                codes[b.id] = Exit.CONFLICT
        if not leased:
            return codes
        try:
            return {**codes, **_run(bucket, manifest, leased, root, log, log_path, processes,
                                    sync_seconds, leases, cpus, sinter_env)}
        except KilnError:
            for lease in leases:
                release(lease, undo=True)  # e.g. a garbage fragment: leave the bucket as it was
            raise
    finally:
        log_file.close()
        for fd in locks:
            os.close(fd)


def _restore(bucket: Bucket, manifest: Manifest, batches: list[Batch], resume: pathlib.Path,
             log: Log, on_conflict: Callable[[], None]) -> list[FragmentSync]:
    """Write the batches' fragments (the bucket's copies, cut back to their last complete line)
    as the one resume file; one sync each, swapping the version read here."""
    together = len(batches) > 1
    with contextlib.suppress(FileNotFoundError):
        resume.unlink()
    rows: list[bytes] = []
    syncers = []
    owner = {sid: b for b in batches for sid in b.strong_ids}
    owners: list[frozenset[str]] = []
    for b in batches:
        fkey = fragment_key(manifest.sweep, b.id)
        try:
            raw, version = bucket.read_versioned(fkey)  # our uploads swap this version
        except ObjectNotFound:
            raw, version = b"", None  # our first upload creates it, if nobody else did
        fragment = parse_fragment(raw, bucket.url_for(fkey))
        clean = fragment.clean
        # Rows of tasks that are not the batch's (a copy by hand) stay in its fragment, as when
        # it runs alone; rows of another batch of this sinter would count toward that one's
        # targets and be uploaded twice: refused.
        strays = set(fragment.stats) - b.strong_ids
        other = next((owner[sid] for sid in strays if sid in owner), None)
        if together and other is not None:
            raise KilnError(f"{bucket.url_for(fkey)}: holds rows of a task of batch {other.id} "
                            f"(run with {b.id} in one sinter): the fragment is damaged: move it "
                            "out of fragments/ to rerun that batch")
        only = b.strong_ids | strays
        if together and clean:  # one header for all; each batch's own rows only
            clean = HEADER_LINE + rows_of(clean, only).split(b"\n", 1)[1]
        done = sum(st.shots for sid, st in fragment.stats.items()
                   if not together or sid in b.strong_ids)
        log(f"restored {len(clean)} bytes ({done} shots) from {fkey}" if clean
            else f"starting fresh ({fkey} not found)")
        if fragment.warning:
            log("warning: " + fragment.warning)
        rows.append(clean[len(HEADER_LINE):] if together else clean)
        # A damaged object (a half row after its complete lines, e.g. a copy by hand) is replaced
        # by its complete lines at the first sync, even if the batch has nothing left to do.
        uploaded = len(clean) if raw == clean else -1
        syncers.append(FragmentSync(bucket, fkey, resume, uploaded=uploaded, log=log,
                                    on_conflict=on_conflict, version=version))
        owners.append(frozenset(only))
    if together:  # the shared file is split once per change, for all of them
        splitter = RowSplitter(resume, owners)
        for i, syncer in enumerate(syncers):
            syncer.split = (splitter, i)
    data = b"".join(rows)
    if data:
        resume.write_bytes(HEADER_LINE + data if together else data)
    return syncers


def _run(bucket: Bucket, manifest: Manifest, batches: list[Batch], root: pathlib.Path,
         log: Log, log_path: pathlib.Path, processes: int | None,
         sync_seconds: float, leases: list[Lease], cpus: Sequence[int] = (),
         sinter_env: dict[str, str] | None = None) -> dict[str, int]:
    """Run ``batches`` (leased) in one sinter per :func:`sinter_runs`; each one's exit code. A
    batch another runner took over (a lost swap or lease) stops uploading, and the others go on:
    sinter stops only when it runs for none of them."""
    sweep = manifest.sweep
    work = root / batches[0].id
    pgid_file = work / "sinter.pgid"
    for b in batches:
        kill_stale_group(root / b.id / "sinter.pgid")
    shards = [s for b in batches for s in b.shards]
    circuits = _fetch_circuits(bucket, manifest, shards, work / "circuits")
    resume = work / "resume.csv"
    running: dict[str, subprocess.Popen | Forked] = {}

    def stop_sinter() -> None:  # from the sync thread, once no batch is this runner's any more
        p = running.get("proc")
        if p is not None and all_conflicted():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGINT)

    syncers = _restore(bucket, manifest, batches, resume, log, stop_sinter)
    for b in batches[1:]:  # where status and the live progress look for each batch's rows
        (root / b.id / "resume.csv").unlink(missing_ok=True)
        (root / b.id / "resume.csv").symlink_to(resume)
    stop_syncing = threading.Event()
    stop_request = StopRequest(bucket, sweep)  # `qec-kiln cancel` asks through the bucket
    lease_period = min(lease.seconds for lease in leases)

    def all_conflicted() -> bool:
        return all(s.conflict for s in syncers)

    def sync_loop() -> None:
        # The fragments first (what counts), then the leases, renewed at least three times per
        # lease period.
        while not stop_syncing.wait(min(sync_seconds, lease_period / 3)):
            for syncer, lease in zip(syncers, leases, strict=True):
                syncer.sync(retry=QUICK_RETRY)
                if not syncer.conflict:
                    try:
                        renew(lease, retry=QUICK_RETRY)
                    except PreconditionFailed as ex:
                        syncer.stand_down(f"lost the lease: {ex}: another run-batch of the same "
                                          "batch took it over; this one stops without uploading")
                    except StorageError as ex:
                        log(f"warning: could not renew the lease, will retry: {ex}")
            _upload_log(bucket, sweep, batches[0].id, log_path)  # each batch's at the end
            if stop_request.asked():  # as a SIGTERM would: stop sinter, upload, then hold
                log("a cancel asked this run to stop")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=sync_loop, name="fragment-sync", daemon=True)
    stop_signal: int | None = None
    proc: subprocess.Popen | Forked | None = None

    def on_signal(signum, _frame):
        raise _Stop(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    rc = 0
    try:
        nproc = processes or len(cpus) or os.cpu_count() or 1
        for run in sinter_runs(shards):
            if all_conflicted():
                break
            paths = [circuits[c] for c in run.circuits]
            argv = sinter_collect_argv(
                paths, decoders=run.decoders, max_shots=run.max_shots, max_errors=run.max_errors,
                processes=nproc, resume_path=resume,
                custom_decoders_module_function=(manifest.custom_decoders_module_function
                                                 or (LOADER if sinter_env else None)),
                # The run's own batch options (its tasks' collection_options) after the
                # sweep's flags: sinter takes the last of a repeated flag.
                extra=[*manifest.sinter_args, *run.batch_flags()],
                # A worker writes its rows at least once per sync period, so a kill loses about
                # one sync period of work however long the task has run (see sinter_collect_argv).
                max_batch_seconds=max(1, math.ceil(sync_seconds)), cpu_ids=cpus,
                metadata_func=metadata_func(manifest, paths, run.circuits),
            )
            log(f"sinter collect: {len(paths)} circuit(s), decoder(s) {' '.join(run.decoders)}, "
                f"max_shots {run.max_shots}, max_errors {run.max_errors}, processes {nproc}, "
                f"CPUs {format_cpus(cpus)}"
                + (f", {' '.join(run.batch_flags())}" if run.batch_options else ""))
            with open(work / "sinter.log", "ab") as sinter_log:
                proc = start_sinter(argv, sinter_log.fileno(), work, sinter_env)
                pgid_file.write_text(str(proc.pid))
                running["proc"] = proc
                if thread.ident is None:  # after the first sinter: it may have been forked
                    thread.start()
                if all_conflicted():
                    stop_sinter()
                rc = proc.wait()
                running.pop("proc", None)
            proc = None
            if all_conflicted():
                break
            if rc < 0:  # Slurm and Kubernetes signal every process of a job, sinter included
                log(f"sinter collect was stopped by {_signal_name(-rc)}")
                break
            if rc != 0:
                tail = (work / "sinter.log").read_bytes()[-2000:].decode("utf-8", "replace")
                log(f"error: sinter collect exited with {rc}:\n{tail}")
                break
    except _Stop as stop:
        stop_signal = stop.signum
        held = len(complete_lines(resume.read_bytes())) if resume.is_file() else 0
        log(f"received {_signal_name(stop.signum)}: stopping sinter and uploading "
            f"(its resume file holds {held} bytes of complete lines)")  # the final upload holds them
    finally:
        # From here on a signal is only recorded: nothing may cut the final upload short.
        late: list[int] = []
        for s in old:
            signal.signal(s, lambda signum, _frame: late.append(signum))
        try:
            if proc is not None:
                for syncer in syncers:  # what sinter wrote so far, before it is stopped
                    syncer.sync(retry=QUICK_RETRY)
                stop_group(proc)
            kill_stale_group(pgid_file)
            stop_syncing.set()
            if thread.is_alive():
                thread.join(timeout=60)
            uploaded_all: dict[str, bool] = {}
            for b, syncer, lease in zip(batches, syncers, leases, strict=True):
                ok = syncer.sync(retry=PATIENT_RETRY)
                if syncer.conflict:
                    log(f"final upload skipped: {syncer.key} is another run-batch's now")
                    continue
                log(f"final upload {'done' if ok else 'FAILED'}: {syncer.uploaded} bytes in "
                    f"{syncer.key}")
                release(lease)
                uploaded_all[b.id] = ok
            all_ok = all(uploaded_all.values())
            if stop_signal is None:
                stop_signal = late[0] if late else (-rc if rc < 0 else None)
            if rc == 0 and stop_signal is None and uploaded_all and all_ok:
                log("batch finished" if len(batches) == 1 else
                    "batches finished" if len(uploaded_all) == len(batches) else
                    f"batches finished: {', '.join(uploaded_all)} (the others are another "
                    "run-batch's)")
            holding = (all_ok and not all_conflicted() and stop_request.acknowledge(
                sum(s.uploaded for s in syncers), log))
            for b in batches:
                _upload_log(bucket, sweep, b.id, log_path)
            if holding:
                stop_request.hold(late)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    codes = {}
    for b, syncer in zip(batches, syncers, strict=True):
        if syncer.conflict:
            codes[b.id] = int(Exit.CONFLICT)
        elif stop_signal is not None:
            codes[b.id] = Exit.for_signal(stop_signal)
        else:
            codes[b.id] = rc or (0 if uploaded_all.get(b.id) else int(Exit.UPLOAD_FAILED))
    return codes


def _signal_name(signum: int) -> str:
    """The name of a signal, for log lines.

    >>> _signal_name(15)
    'SIGTERM'
    """
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _check_versions(manifest: Manifest) -> None:
    here = package_versions()
    for dist in ("stim", "sinter"):
        want = manifest.versions.get(dist)
        if want and here.get(dist) != want:
            raise KilnError(
                f"this node has {dist} {here.get(dist)} but sweep {manifest.sweep!r} was planned with "
                f"{dist} {want}: strong_ids would differ; pin {dist}=={want} in the job's setup"
            )


def _fetch_circuits(bucket: Bucket, manifest: Manifest, shards: Sequence[Shard],
                    folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Download the shards' circuits (checking their sha256), keyed by circuit key."""
    out: dict[str, pathlib.Path] = {}
    for key in sorted({s.circuit for s in shards}):
        entry = manifest.circuit(key)
        path = (folder / key).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise KilnError(f"manifest circuit key {key!r} escapes the work folder; relaunch the sweep")
        if not (path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256):
            data = bucket.read_bytes(circuit_key(manifest.sweep, key))
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise KilnError(
                    f"{bucket.url}/{circuit_key(manifest.sweep, key)}: does not match the manifest's "
                    "sha256; the bucket was modified: relaunch the sweep under a new --name"
                )
            atomic_write(path, data)
        out[key] = path
    return out


def _upload_log(bucket: Bucket, sweep: str, batch: str, log_path: pathlib.Path) -> None:
    try:
        data = log_path.read_bytes()[-LOG_TAIL_BYTES:]
        bucket.write_bytes(log_key(sweep, batch), data, retry=LOG_RETRY)
    except (OSError, StorageError):
        pass  # logs are best effort; fragments are what count

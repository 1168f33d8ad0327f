#!/usr/bin/env python3
"""Kill-loop: SIGKILL ``qec-kiln run-batch`` at random moments until every batch of a sweep finishes.

It plans a small surface-code sweep into a local bucket, runs each batch as its own
``python -m qec_kiln run-batch`` process (own session, like a node), and SIGKILLs the processes at
random moments -- some on a timer, some the instant an upload of the batch's fragment begins (an
inotify watch on ``fragments/`` sees the upload's temporary file; the process holding it open is
killed) -- restarting each killed batch at once, as a recovering managed job would. When every
batch has exited 0 it checks:

* every task reached its target (``qec-kiln merge --json``);
* the merged shots/errors/discards of every task equal the sum of the complete rows of the
  fragments (nothing lost by merge, nothing added);
* each fragment only ever grew by extension: every version seen by a poller (and at each kill)
  starts with the bytes of the one before, so no row was counted twice or rewritten;
* at each kill, the bucket's fragment is a prefix of the batch's local resume file, and the work
  lost (rows in the resume file that had not reached the bucket) is about one sync period;
* no sinter process of the run is left (every process started carries a marker variable in its
  environment; ``/proc/*/environ`` is scanned at the end).

Run it (a longer run than the test's)::

    .venv/bin/python bench/killloop.py --kills 100 --duration 300
    .venv/bin/python bench/killloop.py --kills 20 --duration 40 --json   # what the test runs

Exit code 0 when every check passed, 1 otherwise. ``tests/test_reliability.py`` imports this file
and runs :func:`run_killloop` with a small configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import importlib.util
import io
import json
import os
import pathlib
import random
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parent.parent
TMP_PREFIX = ".kiln-tmp-"  # LocalBucket's temporary upload files (qec_kiln._storage._local._TMP_PREFIX)
IN_CREATE = 0x100
MARKER_VAR = "QEC_KILN_KILLLOOP_TAG"


@dataclasses.dataclass
class Config:
    distances: tuple[int, ...] = (3, 5, 7)
    noises: tuple[float, ...] = (0.003, 0.006)
    max_shots: int = 600_000
    max_errors: int = 4_000
    jobs: int = 3
    processes: int = 1  # sinter --processes of each batch
    sync_seconds: float = 0.5
    min_kills: int = 20  # keep killing until this many kills (or kill_phase_seconds)
    max_kills: int = 10_000
    kill_phase_seconds: float = 60.0
    min_life: float = 0.3  # a timer kill lands uniformly in [min_life, max_life] after a start
    max_life: float = 4.0
    upload_kill_fraction: float = 0.3  # share of lives killed as soon as an upload begins
    restart_delay: float = 0.05
    finish_timeout: float = 180.0  # after the kill phase, how long the batches may take to end
    seed: int = 1
    workdir: str | None = None  # default: a new temporary folder (kept; printed)
    python: str = sys.executable


@dataclasses.dataclass
class Kill:
    batch: str
    t: float  # seconds since the start of the loop
    mode: str  # "timer" or "upload"
    life: float  # seconds the killed process had run
    sinter_running: bool  # sinter had been started in this life
    upload_interrupted: bool  # the upload's temporary file was left behind (killed mid-upload)
    resume_bytes: int
    bucket_bytes: int
    lost_rows: int
    lost_shots: int
    lost_seconds: float  # sinter 'seconds' of the rows that had not reached the bucket
    orphans: int  # processes of sinter's group still alive after run-batch died


@dataclasses.dataclass
class Result:
    config: Config
    workdir: str
    bucket: str
    sweep: str
    wall_seconds: float
    starts: int
    kills: list[Kill]
    unexpected_exits: list[str]
    unfinished: list[str]
    prefix_violations: list[str]
    versions_seen: int
    orphans_at_end: list[str]
    merge: dict
    mismatches: list[str]
    over_target: list[str]
    shots_total: int

    @property
    def upload_kills(self) -> int:
        return sum(k.upload_interrupted for k in self.kills)

    @property
    def kills_while_sinter_ran(self) -> int:
        return sum(k.sinter_running for k in self.kills)

    def lost(self) -> dict:
        secs = [k.lost_seconds for k in self.kills]
        shots = [k.lost_shots for k in self.kills]
        return {
            "lost_seconds_mean": statistics.fmean(secs) if secs else 0.0,
            "lost_seconds_median": statistics.median(secs) if secs else 0.0,
            "lost_seconds_max": max(secs, default=0.0),
            "lost_shots_mean": statistics.fmean(shots) if shots else 0.0,
            "lost_shots_max": max(shots, default=0),
            "lost_share_of_all_shots": sum(shots) / max(1, self.shots_total),
        }

    @property
    def double_counts(self) -> int:
        return len(self.prefix_violations) + len(self.mismatches)

    @property
    def ok(self) -> bool:
        return not (self.unexpected_exits or self.unfinished or self.prefix_violations
                    or self.orphans_at_end or self.mismatches or self.over_target
                    or self.merge.get("reached") != self.merge.get("tasks"))

    def summary(self) -> str:
        lost = self.lost()
        c = self.config
        return "\n".join([
            f"kill-loop: {len(self.kills)} kills ({self.upload_kills} mid-upload, "
            f"{self.kills_while_sinter_ran} while sinter ran), {self.starts} starts, "
            f"{self.wall_seconds:.1f} s wall, sync every {c.sync_seconds:g} s, "
            f"{c.jobs} batches x {c.processes} sinter process(es)",
            f"work lost per kill (rows in the local resume file not yet in the bucket): "
            f"mean {lost['lost_seconds_mean']:.3f} s, median {lost['lost_seconds_median']:.3f} s, "
            f"max {lost['lost_seconds_max']:.3f} s of sinter time; mean {lost['lost_shots_mean']:.0f} "
            f"shots, max {lost['lost_shots_max']} shots; all kills together lost "
            f"{lost['lost_share_of_all_shots']:.2%} of the sweep's shots",
            f"fragment versions checked: {self.versions_seen}; prefix violations: "
            f"{len(self.prefix_violations)}; merge-vs-fragment mismatches: {len(self.mismatches)}; "
            f"double counts: {self.double_counts}",
            f"tasks reaching their target: {self.merge.get('reached')}/{self.merge.get('tasks')}; "
            f"unexpected exits: {len(self.unexpected_exits)}; orphaned processes at the end: "
            f"{len(self.orphans_at_end)}",
            f"result: {'OK' if self.ok else 'FAILED'} (work dir {self.workdir})",
        ])

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "kills": len(self.kills), "upload_kills": self.upload_kills,
            "kills_while_sinter_ran": self.kills_while_sinter_ran, "starts": self.starts,
            "wall_seconds": self.wall_seconds, "sync_seconds": self.config.sync_seconds,
            **self.lost(), "double_counts": self.double_counts,
            "prefix_violations": self.prefix_violations, "mismatches": self.mismatches,
            "versions_seen": self.versions_seen, "over_target": self.over_target,
            "unexpected_exits": self.unexpected_exits, "unfinished": self.unfinished,
            "orphans_at_end": self.orphans_at_end, "merge": self.merge, "workdir": self.workdir,
            "kill_log": [dataclasses.asdict(k) for k in self.kills],
        }


# ------------------------------------------------------------------------------------------------
# helpers


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "generate_surface_codes", REPO / "examples" / "generate_surface_codes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _csv_stats(data: bytes):
    """sinter TaskStats of complete rows (``data`` may lack the header)."""
    import sinter

    from qec_kiln._sweep.fragments import HEADER_LINE, complete_lines

    data = complete_lines(data)
    if not data.startswith(HEADER_LINE.split(b",")[0]):
        data = HEADER_LINE + data
    return sinter.read_stats_from_csv_files(io.StringIO(data.decode()))


def _alive(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rindex(")") + 2:].startswith(("Z", "X"))


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    from qec_kiln._node.processes import pids_in_group

    return [pid for pid in pids_in_group(pgid) if _alive(pid)]


def tagged_processes(tag: str) -> list[str]:
    """Live processes whose environment holds ``MARKER_VAR=tag`` (pid and command line)."""
    needle = f"{MARKER_VAR}={tag}".encode()
    out = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes() and _alive(int(d.name)):
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"pid {d.name}: {cmd[:160]}")
        except OSError:
            continue
    return out


def _holder_of(pids: dict[str, int], name: str) -> str | None:
    """The batch whose run-batch process has the file ``name`` open."""
    for batch, pid in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/" + name):
                    return batch
    return None


class _Inotify:
    """IN_CREATE events of one directory (Linux inotify through ctypes)."""

    def __init__(self, folder: pathlib.Path):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, str(folder).encode(), IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")

    def names(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            buf = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out, i = [], 0
        while i + 16 <= len(buf):
            _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, i)
            out.append(buf[i + 16:i + 16 + length].split(b"\0", 1)[0].decode())
            i += 16 + length
        return out

    def close(self) -> None:
        os.close(self.fd)


@dataclasses.dataclass
class _Slot:
    batch: str
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_started: float = 0.0
    kill_at: float | None = None  # timer kill
    on_upload: bool = False  # kill at the next upload
    upload_tmp: str | None = None  # the temporary file of the upload it was killed in
    killed_mode: str | None = None
    done: bool = False


# ------------------------------------------------------------------------------------------------
# the loop


def setup_sweep(cfg: Config, root: pathlib.Path) -> tuple[str, str, list]:
    """Circuits, a planned sweep uploaded to a local bucket; returns (bucket, sweep, batches)."""
    from qec_kiln._prepare import Fleet, prepare_sweep
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.store import upload_sweep

    gen = _load_generator()
    circuits = root / "circuits"
    circuits.mkdir(parents=True, exist_ok=True)
    for d in cfg.distances:
        for p in cfg.noises:
            path = circuits / f"d={d},p={p},b=X,type=rotated_surface_memory.stim"
            path.write_text(str(gen.surface_code_circuit(d, p)) + "\n")
    bucket_url = str(root / "bucket")
    bucket = open_bucket(bucket_url)
    fleet = Fleet.build(dict(decoders=["pymatching"], max_shots=cfg.max_shots,
                             max_errors=cfg.max_errors, bucket=bucket_url, name="killloop",
                             backend="local", jobs=cfg.jobs))
    prepared = prepare_sweep(str(circuits), fleet, bucket, lambda s: None)
    upload_sweep(bucket, prepared.manifest, prepared.circuits, lambda s: None)
    return bucket_url, prepared.manifest.sweep, prepared.manifest.batches


def run_killloop(cfg: Config, log=print) -> Result:
    rng = random.Random(cfg.seed)
    root = pathlib.Path(cfg.workdir or tempfile.mkdtemp(prefix="qec-kiln-killloop-"))
    root.mkdir(parents=True, exist_ok=True)
    bucket_url, sweep, batches = setup_sweep(cfg, root)
    frag_dir = pathlib.Path(bucket_url) / sweep / "fragments"
    frag_dir.mkdir(parents=True, exist_ok=True)
    work = root / "work"
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    tag = uuid.uuid4().hex
    env = {**os.environ, MARKER_VAR: tag, "QEC_KILN_HOME": str(root / "home"),
           "QEC_KILN_WORK_DIR": str(work), "PYTHONUNBUFFERED": "1"}
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    slots = {b.id: _Slot(b.id) for b in batches}
    lock = threading.Lock()
    stop = threading.Event()
    kills: list[Kill] = []
    unexpected: list[str] = []
    violations: list[str] = []
    versions = {b.id: b"" for b in batches}
    versions_seen = 0
    pgids_seen: set[int] = set()
    starts = 0
    t0 = time.monotonic()

    def check_version(batch: str, data: bytes, where: str) -> None:
        nonlocal versions_seen
        prev = versions[batch]
        if data == prev:
            return
        if not data.startswith(prev):
            violations.append(f"{batch}: {where}: {len(data)}-byte version does not start with the "
                              f"{len(prev)}-byte one before it")
        versions[batch] = data
        versions_seen += 1

    def poll_fragments() -> None:
        while not stop.wait(0.01):
            for b in slots:
                with contextlib.suppress(FileNotFoundError):
                    data = (frag_dir / f"{b}.csv").read_bytes()
                    with lock:
                        check_version(b, data, "poll")

    def watch_uploads() -> None:
        ino = _Inotify(frag_dir)
        try:
            while not stop.is_set():
                for name in ino.names(0.1):
                    if not name.startswith(TMP_PREFIX):
                        continue
                    with lock:
                        pids = {b: s.proc.pid for b, s in slots.items()
                                if s.on_upload and s.proc is not None and s.killed_mode is None
                                and s.proc.poll() is None}
                        if not pids:
                            continue
                        batch = _holder_of(pids, name)
                        if batch is None:
                            continue
                        s = slots[batch]
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(s.proc.pid, signal.SIGKILL)
                        s.killed_mode, s.upload_tmp = "upload", name
        finally:
            ino.close()

    def start(s: _Slot) -> None:
        nonlocal starts
        argv = [cfg.python, "-m", "qec_kiln", "run-batch", "--bucket", bucket_url, "--sweep", sweep,
                "--batch", s.batch, "--sync-seconds", f"{cfg.sync_seconds:g}",
                "--processes", str(cfg.processes), "--work-dir", str(work)]
        with open(logs / f"{s.batch}.out", "ab") as out:
            s.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                      env=env, start_new_session=True)
        starts += 1
        s.started = time.monotonic()
        s.wall_started = time.time()
        s.killed_mode = s.upload_tmp = None
        killing = (time.monotonic() - t0 < cfg.kill_phase_seconds and len(kills) < cfg.max_kills)
        s.on_upload = killing and rng.random() < cfg.upload_kill_fraction
        s.kill_at = (s.started + rng.uniform(cfg.min_life, cfg.max_life)) if killing else None
        if s.on_upload:
            s.kill_at = None  # killed by the upload watcher (or disarmed at the end of the phase)

    def measure(s: _Slot, life: float) -> Kill:
        bwork = work / sweep / s.batch
        pgid = None
        with contextlib.suppress(OSError, ValueError):
            pgid_file = bwork / "sinter.pgid"
            if pgid_file.stat().st_mtime >= s.wall_started:  # written in this life
                pgid = int(pgid_file.read_text())
        sinter_running = pgid is not None
        orphans = 0
        if pgid is not None:
            pgids_seen.add(pgid)
            deadline = time.monotonic() + 3.0
            while _alive(pgid) and time.monotonic() < deadline:  # PDEATHSIG takes sinter's main
                time.sleep(0.005)
            orphans = len(_group_members(pgid))
        try:
            resume = (bwork / "resume.csv").read_bytes()
        except FileNotFoundError:
            resume = b""
        try:
            remote = (frag_dir / f"{s.batch}.csv").read_bytes()
        except FileNotFoundError:
            remote = b""
        check_version(s.batch, remote, "at kill")
        from qec_kiln._sweep.fragments import complete_lines

        resume_c = complete_lines(resume)
        if resume_c and not resume_c.startswith(remote):
            violations.append(f"{s.batch}: at kill t={time.monotonic() - t0:.2f}s the bucket's "
                              f"{len(remote)} bytes are not a prefix of the local resume file")
        gap = resume_c[len(remote):] if resume_c.startswith(remote) else b""
        rows = _csv_stats(gap) if gap else []
        interrupted = bool(s.upload_tmp) and (frag_dir / s.upload_tmp).exists()
        return Kill(batch=s.batch, t=round(time.monotonic() - t0, 3), mode=s.killed_mode or "timer",
                    life=round(life, 3), sinter_running=sinter_running, upload_interrupted=interrupted,
                    resume_bytes=len(resume_c), bucket_bytes=len(remote), lost_rows=len(rows),
                    lost_shots=sum(r.shots for r in rows),
                    lost_seconds=round(sum(r.seconds for r in rows), 4), orphans=orphans)

    poller = threading.Thread(target=poll_fragments, daemon=True)
    watcher = threading.Thread(target=watch_uploads, daemon=True)
    poller.start()
    watcher.start()
    try:
        with lock:
            for s in slots.values():
                start(s)
        hard_deadline = t0 + cfg.kill_phase_seconds + cfg.finish_timeout
        while not all(s.done for s in slots.values()):
            if time.monotonic() > hard_deadline:
                break
            time.sleep(0.01)
            now = time.monotonic()
            in_phase = now - t0 < cfg.kill_phase_seconds and len(kills) < cfg.max_kills
            with lock:
                for s in slots.values():
                    if s.done or s.proc is None:
                        continue
                    if not in_phase:
                        s.on_upload = False
                        s.kill_at = None
                    if s.kill_at is not None and now >= s.kill_at and s.proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(s.proc.pid, signal.SIGKILL)
                        s.killed_mode = "timer"
                    rc = s.proc.poll()
                    if rc is None:
                        continue
                    life = now - s.started
                    if rc == 0:  # finished (even if a kill was sent just too late)
                        s.done = True
                        continue
                    if rc == -signal.SIGKILL and s.killed_mode is not None:
                        kills.append(measure(s, life))
                    else:
                        tail = (logs / f"{s.batch}.out").read_bytes()[-600:].decode(errors="replace")
                        unexpected.append(f"{s.batch}: exit {rc} after {life:.1f} s: {tail}")
                        if len(unexpected) > 10:
                            raise RuntimeError("too many unexpected exits:\n" + "\n".join(unexpected))
                    time.sleep(cfg.restart_delay)
                    start(s)
    finally:
        stop.set()
        for s in slots.values():
            if s.proc is not None and s.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(timeout=30)
        poller.join(timeout=5)
        watcher.join(timeout=5)
    wall = time.monotonic() - t0
    unfinished = [b for b, s in slots.items() if not s.done]

    # Orphans: any process of the run still alive (give killed groups a moment to be reaped).
    deadline = time.monotonic() + 5.0
    orphans = tagged_processes(tag)
    while orphans and time.monotonic() < deadline:
        time.sleep(0.2)
        orphans = tagged_processes(tag)
    orphans += [f"pgid {g}: pid {p}" for g in sorted(pgids_seen) for p in _group_members(g)
                if not any(f"pid {p}:" in o for o in orphans)]

    # Final fragments: each must extend what was seen before.
    from qec_kiln._sweep.fragments import parse_fragment

    per_task: dict[str, list[int]] = {}
    shots_total = 0
    for b in slots:
        data = (frag_dir / f"{b}.csv").read_bytes() if (frag_dir / f"{b}.csv").exists() else b""
        check_version(b, data, "final")
        frag = parse_fragment(data, f"{b}.csv")
        for sid, st in frag.stats.items():
            acc = per_task.setdefault(sid, [0, 0, 0])
            acc[0] += st.shots
            acc[1] += st.errors
            acc[2] += st.discards
            shots_total += st.shots

    # Per shard: at most its max_shots (a resumed sinter never takes more than it was asked for).
    over = []
    for b in batches:
        data = (frag_dir / f"{b.id}.csv").read_bytes() if (frag_dir / f"{b.id}.csv").exists() else b""
        stats = parse_fragment(data, b.id).stats
        for sh in b.shards:
            st = stats.get(sh.strong_id)
            if st is not None and st.shots > sh.max_shots:
                over.append(f"{b.id} {sh.circuit}: {st.shots} shots > max_shots {sh.max_shots}")

    merged_path = root / "merged.csv"
    proc = subprocess.run([cfg.python, "-m", "qec_kiln", "merge", "--bucket", bucket_url,
                           "--sweep", sweep, "--out", str(merged_path), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    try:
        merge = json.loads(proc.stdout)
    except ValueError:
        merge = {"error": proc.stderr.strip()[-400:] or proc.stdout[-400:]}
    mismatches = []
    if merged_path.exists():
        import sinter

        merged = {s.strong_id: s for s in sinter.read_stats_from_csv_files(str(merged_path))}
        for sid, (shots, errors, discards) in per_task.items():
            m = merged.get(sid)
            got = (m.shots, m.errors, m.discards) if m else None
            if got != (shots, errors, discards):
                mismatches.append(f"{sid[:12]}: merged {got} != fragments {(shots, errors, discards)}")
        mismatches += [f"{sid[:12]}: in merged output but in no fragment"
                       for sid in merged if sid not in per_task]
    else:
        mismatches.append(f"merge wrote no file: {merge}")
    result = Result(config=cfg, workdir=str(root), bucket=bucket_url, sweep=sweep, wall_seconds=wall,
                    starts=starts, kills=kills, unexpected_exits=unexpected, unfinished=unfinished,
                    prefix_violations=violations, versions_seen=versions_seen,
                    orphans_at_end=orphans, merge=merge, mismatches=mismatches, over_target=over,
                    shots_total=shots_total)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--kills", type=int, default=d.min_kills,
                   help=f"kill at least this many times (default {d.min_kills})")
    p.add_argument("--max-kills", type=int, default=d.max_kills, help="stop killing after this many")
    p.add_argument("--duration", type=float, default=d.kill_phase_seconds,
                   help=f"seconds of the kill phase at most (default {d.kill_phase_seconds:g}); "
                   "then the batches run to the end undisturbed")
    p.add_argument("--sync-seconds", type=float, default=d.sync_seconds)
    p.add_argument("--jobs", type=int, default=d.jobs, help="batches (run at once)")
    p.add_argument("--processes", type=int, default=d.processes, help="sinter processes per batch")
    p.add_argument("-d", "--distances", type=int, nargs="+", default=list(d.distances))
    p.add_argument("-p", "--noise", type=float, nargs="+", default=list(d.noises))
    p.add_argument("--max-shots", type=int, default=d.max_shots)
    p.add_argument("--max-errors", type=int, default=d.max_errors)
    p.add_argument("--min-life", type=float, default=d.min_life)
    p.add_argument("--max-life", type=float, default=d.max_life)
    p.add_argument("--upload-kill-fraction", type=float, default=d.upload_kill_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workdir", help="where to put circuits, bucket and work files (default: temp)")
    p.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = p.parse_args(argv)
    cfg = Config(distances=tuple(args.distances), noises=tuple(args.noise), max_shots=args.max_shots,
                 max_errors=args.max_errors, jobs=args.jobs, processes=args.processes,
                 sync_seconds=args.sync_seconds, min_kills=args.kills, max_kills=args.max_kills,
                 kill_phase_seconds=args.duration, min_life=args.min_life, max_life=args.max_life,
                 upload_kill_fraction=args.upload_kill_fraction, seed=args.seed, workdir=args.workdir)
    result = run_killloop(cfg)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    print(result.summary())
    return 0 if result.ok and len(result.kills) >= args.kills else 1


if __name__ == "__main__":
    sys.exit(main())

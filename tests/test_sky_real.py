"""qec-kiln through the real SkyPilot 0.14.1 (``sky_local``: its API server, jobs controller and
Slurm infra on this machine), against moto S3 on loopback: nothing here imitates SkyPilot.

One module fixture launches four sweeps at once on the one API server, so that their clusters
start side by side (a cold cluster takes about three minutes here; one after another they would
take fifteen): ``nj`` (two batches in one ``sky.jobs.launch(num_jobs=2)``; rank 1 is preempted by
an ``scancel`` of its Slurm allocation), ``cfg`` (nodes with read-only bucket keys), and on one
warm pool worker ``pl`` (two batches: more batches than workers) then ``can`` (``qec-kiln
cancel`` mid-run). Four clusters (five with the recovery), as many as the test Slurm's four CPUs
hold at once: a managed job always gets a cluster of its own, and pool jobs share the worker. The
tests only wait and check, in file order; each prints what it measured (setup seconds, start-up,
what a cancel lost). The one action that must not wait for its turn, the cancel of ``can`` (its
job samples on a core until then), is taken by a thread as soon as ``can`` has two rows up.
A third thread runs ``qec_kiln.iter_collect`` (sinter's Python API) on that pool once ``can`` is
cancelled: a notebook's decoder object, shipped with the sweep, and two tasks with targets of
their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from kiln_helpers import fragment_rows, run_kiln, shots_per_task, write_surface_circuits

from qec_kiln._backends.skypilot import startup
from qec_kiln._backends.skypilot.backend import packaged_yaml_text
from qec_kiln._errors import StorageError
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.fragments import complete_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SYNC = "2"
LONG_SHOTS = 2_000_000  # d=7, p=0.004/0.005: about 8 us a shot, ~16 s of sinter per task on one core
POOL_SHOTS = 5_000
WAIT = 900  # seconds: cold clusters on a loaded 2-core machine take minutes
SKY = str(Path(sys.executable).parent / "sky")
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "FAILED_SETUP", "FAILED_CONTROLLER",
            "FAILED_NO_RESOURCE", "FAILED_PRECHECKS"}


#: ``qec_kiln.iter_collect`` as a notebook calls it, on the pool of this module (argv: the tests'
#: folder, the bucket, the job YAML, the pool's name): a decoder object of a notebook's class
#: (``AlwaysFlip(1)``: on a noiseless circuit every shot is an error) and two tasks, one with its
#: own max_shots. Prints each Progress's rows and the strong_ids sinter gives the tasks.
COLLECT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import sinter, stim, qec_kiln
from kiln_helpers import notebook
cell = notebook()
circuit = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2)
tasks = [sinter.Task(circuit=circuit, json_metadata={"t": 1},
                     collection_options=sinter.CollectionOptions(max_shots=300)),
         sinter.Task(circuit=circuit, json_metadata={"t": 2})]
steps = []
for progress in qec_kiln.iter_collect(
        num_workers=1, tasks=tasks, decoders=["flip"], max_shots=700, max_errors=10**6,
        custom_decoders={"flip": cell.AlwaysFlip(1)}, bucket=sys.argv[2], backend="skypilot",
        backend_options={"infra": "slurm", "yaml_path": sys.argv[3], "workers": 1, "cpus": "1",
                         "pool": sys.argv[4], "sync_seconds": 2.0},
        poll_seconds=10, log=lambda line: print("log:", line, flush=True)):
    steps.append([[s.strong_id, s.shots, s.errors, s.json_metadata] for s in progress.new_stats])
dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
ids = {t.json_metadata["t"]: sinter.Task(circuit=circuit, decoder="flip", detector_error_model=dem,
                                         json_metadata=t.json_metadata).strong_id() for t in tasks}
print("@@OUT@@" + json.dumps({"steps": steps, "ids": ids}))
"""


def job_yaml(path: Path) -> Path:
    """The packaged task with what a small Slurm node fits (1 CPU, 1 GB, no spot) and the AWS
    variables as secrets (SkyPilot copies them from the launching environment)."""
    cfg = yaml.safe_load(packaged_yaml_text("sinter_job.yaml"))
    cfg["resources"].update(cpus=1, memory=1, use_spot=False)
    cfg["secrets"] = dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                    "AWS_ENDPOINT_URL"))
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Real:
    """The module's shared state: the bucket, the environment of every qec-kiln call."""

    def __init__(self, sky_local, s3_server, s3_auth, root: Path):
        self.sky = sky_local
        self.root = root
        self.bucket = f"kiln-real-{os.getpid()}"
        s3_server.client().create_bucket(Bucket=self.bucket)
        self.url = f"s3://{self.bucket}/k"
        self.aws = {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.auth = s3_auth
        self.env = {**sky_local.client_env, **self.aws,
                    "QEC_KILN_HOME": str(root / "home"),
                    "QEC_KILN_WHEEL_CACHE": str(root / "wheels")}
        self.started = time.monotonic()
        self.pool_errors: list[str] = []
        self.pool_launched = threading.Event()
        self.abandon = threading.Event()
        self.pool_launch: threading.Thread | None = None
        self.cancel: dict = {}  # what cancel_mid_run measured, or its "error"
        self.cancel_thread: threading.Thread | None = None
        self.collect: dict = {}  # what collect_on_the_pool ran, or its "error"
        self.collect_thread: threading.Thread | None = None
        self.collect_proc: subprocess.Popen | None = None
        self._buckets: dict[str, object] = {}
        self._buckets_lock = threading.Lock()

    def launch_in_turn(self, launches: list[list[str]]) -> None:
        """Run the ``qec-kiln`` argvs one after another (a thread); ``pool_errors`` holds any
        failure and ``pool_launched`` is set when all are done."""
        for argv in launches:
            if self.abandon.is_set():  # the module is cleaning up: launch nothing more
                break
            proc = self.kiln(*argv, timeout=600, check=False)
            if proc.returncode != 0:
                self.pool_errors.append(f"{' '.join(argv[:6])}...:\n{proc.stdout}\n{proc.stderr}")
                break
        self.pool_launched.set()

    def cancel_mid_run(self) -> None:
        """``qec-kiln cancel`` of ``can`` as soon as it has uploaded two rows (a thread, so that
        its job stops burning a core while the other tests wait; the cancel test checks what it
        recorded in ``cancel``)."""
        try:
            assert self.pool_launched.wait(600) and not self.pool_errors, self.pool_errors
            self.sky.wait_for(lambda: self.abandon.is_set()
                              or len(fragment_rows(self.fragment("can"))) >= 2, WAIT,
                              "two uploaded rows of can (the pool's third job)")
            if self.abandon.is_set():
                return
            time.sleep(0.7 * float(SYNC))  # between two periodic uploads
            started = time.monotonic()
            proc = self.kiln("cancel", "--bucket", self.url, "--sweep", "can")
            self.cancel.update(proc=proc, asked=time.monotonic() - started)
            (rec,) = self.wait_states("can", {"CANCELLED"}, 1, timeout=600)
            self.cancel.update(rec=rec, cancelled=time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001 (the cancel test reports it)
            self.cancel["error"] = exc

    def collect_on_the_pool(self, job: Path) -> None:
        """:data:`COLLECT` in a Python of its own once ``can`` is cancelled (its job then
        frees the pool's worker), on the pool that ``pl`` created (a thread; the collect test
        checks what it recorded in ``collect``)."""
        try:
            assert self.pool_launched.wait(600) and not self.pool_errors, self.pool_errors
            self.cancel_thread.join(1400)
            if self.abandon.is_set():
                return
            (pool,) = self.sky.sdk("out = [str(p.get('name')) for p in "
                                   "(sky.get(sky.jobs.pool_status(None)) or [])]")
            self.collect_proc = subprocess.Popen(
                [sys.executable, "-c", COLLECT, str(Path(__file__).parent), self.url, str(job),
                 pool], env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
            out, _ = self.collect_proc.communicate(timeout=WAIT)
            self.collect.update(rc=self.collect_proc.returncode, out=out)
            # collect returns once the rows are in the bucket; its job ends a little later, and
            # the pool can only go down after it
            for sweep in real_sweeps(self, ("tasks-",)):
                self.wait_states(sweep, TERMINAL, 1, timeout=600)
        except BaseException as exc:  # noqa: BLE001 (the collect test reports it)
            self.collect["error"] = exc

    def kiln(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
             check: bool = True) -> subprocess.CompletedProcess:
        return run_kiln(*args, env={**self.env, **(env or {})}, timeout=timeout, check=check)

    def job_ids(self, sweep: str) -> list[int]:
        """The job ids launch recorded for ``sweep`` (rank k = k-th smallest)."""
        path = Path(self.env["QEC_KILN_HOME"]) / "skypilot" / sweep / "launches.json"
        return sorted(i for rec in json.loads(path.read_text()) for i in rec["job_ids"])

    def records(self, sweep: str) -> list[dict]:
        return [r for r in self.sky.queue() if r.get("job_name") == f"kiln-{sweep}"]

    def wait_states(self, sweep: str, want: set[str], n: int, timeout: float = WAIT) -> list[dict]:
        def done():
            recs = self.records(sweep)
            return recs if len(recs) == n and all(r["status"] in want for r in recs) else None
        # Each look at the queue starts a Python that imports SkyPilot: every 6 s, not 3.
        return self.sky.wait_for(done, timeout, f"{n} job(s) of {sweep} in {sorted(want)}",
                                 interval=6.0)

    def job_log(self, job_id: int, timeout: float = 180) -> str:
        """``sky jobs logs --no-follow ID``; SkyPilot has a finished job's log only once it has
        synced it down from the cluster, so ask again until it does."""
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run([SKY, "jobs", "logs", "--no-follow", str(job_id)],
                                  env={**os.environ, **self.env}, capture_output=True, text=True,
                                  timeout=120, stdin=subprocess.DEVNULL, check=False)
            text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", proc.stdout + proc.stderr)
            if "already in terminal state" not in text or time.monotonic() > deadline:
                return text
            time.sleep(5)

    def opened(self, url: str | None = None):
        """The bucket at ``url`` (default: the module's), opened once: each opening builds a boto3
        client (about half a second of CPU), and the threads look every few seconds."""
        url = url or self.url
        with self._buckets_lock:
            if url not in self._buckets:
                self._buckets[url] = open_bucket(url)
            return self._buckets[url]

    def read(self, key: str, url: str | None = None) -> bytes:
        """The object's bytes, or b"" when it is missing or the store fails (a bug still raises)."""
        try:
            return self.opened(url).read_bytes(key)
        except StorageError:
            return b""

    def fragment(self, sweep: str, batch: str = "b000") -> bytes:
        return self.read(f"{sweep}/fragments/{batch}.csv")

    def squeue(self) -> str:
        return "\n".join(self.sky.squeue())


def assert_merges_exactly(real: Real, sweep: str, batches: list[str], *, tasks: int,
                          shots_each: int, out: Path) -> None:
    """Each task of ``sweep`` at exactly ``shots_each`` over its fragments, and ``qec-kiln merge
    --sweep`` (the bucket holds the module's other sweeps too) gives ``tasks * shots_each``."""
    import sinter

    totals = shots_per_task(*(real.fragment(sweep, b) for b in batches))
    assert sorted(totals.values()) == [shots_each] * tasks, totals
    real.kiln("merge", "--bucket", real.url, "--sweep", sweep, "--out", str(out))
    assert sum(s.shots for s in sinter.read_stats_from_csv_files(str(out))) == tasks * shots_each


def setup_seconds(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"qec-kiln setup: (\d+) s with uv", log)]


@pytest.fixture(scope="module")
def real(sky_local, s3_server, s3_auth, tmp_path_factory):
    """Launch nj, can, pl (moto S3) and cfg (the IAM-checking moto, read-only keys on the nodes)
    at once. Whatever happens, a failed launch included, it ends by cancelling every job and
    taking the pool down, and returns only when SkyPilot's Slurm holds no allocation."""
    root = tmp_path_factory.mktemp("real")
    r = Real(sky_local, s3_server, s3_auth, root)
    procs: dict[str, subprocess.Popen] = {}
    with pytest.MonkeyPatch.context() as mp:  # the bucket's keys, for the cancel thread's reads
        for k, v in r.aws.items():
            mp.setenv(k, v)
        try:
            _launch_all(r, root, procs)
            yield r
        finally:
            _clean_up(r, procs)


def _launch_all(r: Real, root: Path, procs: dict[str, subprocess.Popen]) -> None:
    small = write_surface_circuits(root / "small", distances=(3,), noises=(0.001, 0.01))
    long = write_surface_circuits(root / "long", distances=(7,), noises=(0.004, 0.005))
    # Other tasks for can, and for the last test's plan: a new sweep of tasks that another sweep
    # of the bucket still samples is refused (a top-up counts their rows).
    other = write_surface_circuits(root / "other", distances=(7,), noises=(0.006,))
    write_surface_circuits(root / "plan", distances=(5,), noises=(0.001,))
    base = job_yaml(root / "job.yaml")
    common = ["--backend", "skypilot", "--infra", "slurm", "--yaml", str(base), "--bucket", r.url,
              "--processes", "1", "--sync-seconds", SYNC, "--max-errors", "1_000_000_000"]
    nj = ["launch", str(long), *common, "--name", "nj", "--jobs", "2", "--max-shots",
          str(LONG_SHOTS)]
    r.dry_nj = json.loads(r.kiln(*nj, "--dry-run", "--json").stdout)  # builds the wheel once
    # cfg: a sweep uploaded with keys allowed everything (that launch cannot reach an API server),
    # then launched again from an environment whose keys are read-only: the nodes get those.
    r.cfg_url = f"s3://{r.auth.bucket}/cfg-{os.getpid()}"
    auth_env = {"AWS_ENDPOINT_URL": r.auth.endpoint, "AWS_ACCESS_KEY_ID": r.auth.access_key_id,
                "AWS_SECRET_ACCESS_KEY": r.auth.secret_access_key}
    r.auth_env = auth_env
    cfg = ["launch", str(small), "--backend", "skypilot", "--infra", "slurm", "--yaml", str(base),
           "--bucket", r.cfg_url, "--processes", "1", "--sync-seconds", SYNC, "--name", "cfg",
           "--jobs", "1", "--max-shots", "1000"]
    first = r.kiln(*cfg, env={**auth_env, "SKYPILOT_API_SERVER_ENDPOINT": "http://127.0.0.1:9"},
                   check=False)
    assert first.returncode != 0 and "uploaded" in first.stdout + first.stderr, first.stderr
    readonly = {**auth_env, "AWS_ACCESS_KEY_ID": r.auth.readonly_access_key_id,
                "AWS_SECRET_ACCESS_KEY": r.auth.readonly_secret_access_key}
    # The pool: pl creates it (pool_apply), can queues behind pl's two jobs on its one worker.
    pooled = [*common, "--cpus", "1", "--workers", "1"]
    on_pool = [["launch", str(small), *pooled, "--name", "pl", "--jobs", "2",
                "--max-shots", str(POOL_SHOTS)],
               ["launch", str(other), *pooled, "--name", "can", "--jobs", "1",
                "--max-shots", str(20 * LONG_SHOTS)]]
    r.launched_at = time.time()
    r.pool_launch = threading.Thread(target=r.launch_in_turn, args=(on_pool,), daemon=True)
    r.pool_launch.start()
    r.cancel_thread = threading.Thread(target=r.cancel_mid_run, daemon=True)
    r.cancel_thread.start()
    r.collect_thread = threading.Thread(target=r.collect_on_the_pool, args=(base,), daemon=True)
    r.collect_thread.start()
    for name, (argv, extra) in {"nj": (nj, {}), "cfg": (cfg, readonly)}.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "qec_kiln", *argv], env={**os.environ, **r.env, **extra},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"launch {name}:\n{out}"
    print(f"nj, cfg submitted in {time.time() - r.launched_at:.1f} s")


def _clean_up(r: Real, procs: dict[str, subprocess.Popen]) -> None:
    """Leave no launch, job, pool, cluster or Slurm allocation of this module behind, also after a
    failed launch: launches still submitting end first (a launch finishing after the cancel
    would start a cluster nobody stops), then the jobs are cancelled and the pool taken down."""
    def stop_launches() -> None:
        r.abandon.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        if r.pool_launch is not None:
            r.pool_launch.join(timeout=600)
        if r.cancel_thread is not None:
            r.cancel_thread.join(timeout=700)
        if r.collect_proc is not None and r.collect_proc.poll() is None:
            r.collect_proc.kill()
        if r.collect_thread is not None:
            r.collect_thread.join(timeout=700)

    def cancel_jobs() -> None:
        left = sorted({rec["job_id"] for rec in r.sky.queue() if rec["status"] not in TERMINAL})
        if left:
            r.sky.sdk(f"out = sky.get(sky.jobs.cancel(job_ids={left}))")

    def remove_work_folders() -> None:
        # The nodes are this machine: their work folders (TMPDIR/qec-kiln-work/<sweep>) outlive
        # them.
        for sweep in ("nj", "can", "cfg", "pl", *real_sweeps(r, ("tasks-",))):
            shutil.rmtree(Path(tempfile.gettempdir()) / "qec-kiln-work" / sweep,
                          ignore_errors=True)

    errors = []
    for step in (stop_launches, cancel_jobs,
                 lambda: run_kiln("pool", "down", env=r.env, timeout=300, check=False),
                 lambda: r.sky.release_slurm(timeout=300), remove_work_folders):
        try:  # every step, whatever an earlier one raised
            step()
        except Exception as exc:  # noqa: BLE001 (reported below, after the other steps)
            errors.append(exc)
    print(f"SkyPilot tests: {time.monotonic() - r.started:.0f} s from the first launch")
    if errors:
        raise errors[0]


def test_preempted_rank_is_recovered_by_skypilot(real, monkeypatch):
    """An ``scancel`` of rank 1's Slurm allocation (the VM gone): SkyPilot marks the job
    RECOVERING, relaunches it on a new cluster, and run-batch resumes from its fragment."""
    for k, v in real.aws.items():
        monkeypatch.setenv(k, v)
    job_id = real.job_ids("nj")[1]
    real.sky.wait_for(lambda: fragment_rows(real.fragment("nj", "b001")), WAIT,
                      "an uploaded row of nj/b001")
    squeue = real.squeue()
    alloc = [ln.split()[0] for ln in squeue.splitlines() if f"kiln-nj-{job_id}-" in ln]
    assert len(alloc) == 1, squeue
    real.rows_before_preemption = len(fragment_rows(real.fragment("nj", "b001")))
    subprocess.run(["scancel", alloc[0]], env=real.sky.slurm_env, check=True)
    real.preempted_at = time.monotonic()
    seen = real.sky.wait_for(
        lambda: [r for r in real.records("nj") if r["job_id"] == job_id and (
            r["status"] == "RECOVERING" or (r.get("recovery_count") or 0) >= 1)], 600,
        "nj rank 1 RECOVERING")
    status = real.kiln("status", "--bucket", real.url, "--sweep", "nj").stdout
    print(f"nj rank 1 after scancel: {seen[0]['status']}; qec-kiln status:\n{status}")
    assert re.search(r"b001\s.*(RECOVERING|RUNNING|STARTING)", status), status


def test_cancel_mid_run_uploads_every_complete_line(real, monkeypatch):
    """``qec-kiln cancel`` mid-run (a job on the pool's worker), as soon as two rows are up
    (``Real.cancel_mid_run``, started with the launches). SkyPilot's graceful cancel
    SIGKILLs the task's srun step on its Slurm infra, so cancel first asks the run through the
    bucket (``_node/stop.py``): the fragment then holds every complete line of the node's resume
    file, and the job ends CANCELLED. Prints what was lost (before this, the last sync period:
    1 row)."""
    for k, v in real.aws.items():
        monkeypatch.setenv(k, v)
    real.cancel_thread.join(1400)
    assert not real.cancel_thread.is_alive(), "the cancel of can did not end"
    if "error" in real.cancel:
        raise real.cancel["error"]
    proc, asked = real.cancel["proc"], real.cancel["asked"]
    print(proc.stdout, proc.stderr)
    rec, cancelled = real.cancel["rec"], real.cancel["cancelled"]
    final = real.fragment("can")
    log = real.read("can/logs/b000.log").decode()
    log = log[log.rfind("b000: starting fresh"):]  # this run's lines (a node's work dir is reused)
    (job_id,) = real.job_ids("can")
    ack = real.read(f"can/stop/{job_id}.stopped").decode().strip()
    signalled = re.search(r"received SIGTERM: .*holds (\d+) bytes", log)
    assert "a cancel asked this run to stop" in log and signalled, log[-3000:]
    assert "final upload done" in log and "stopped as a cancel asked" in log, log[-3000:]
    held = int(signalled.group(1))
    assert complete_lines(final) == final and len(final) >= held and int(ack) == len(final)
    # The node's resume file (the node is this machine): the fragment is all its complete lines.
    # (run-batch's default work folder: the node's TMPDIR, unset under SkyPilot's Slurm infra;
    # no glob of /tmp, whose folders of other runs come and go meanwhile)
    resumes = [p for p in {Path(tempfile.gettempdir()) / "qec-kiln-work/can/b000/resume.csv",
                           Path("/tmp/qec-kiln-work/can/b000/resume.csv")}
               if p.is_file() and p.stat().st_mtime > real.launched_at]
    lost = "unknown (no resume file found)"
    if resumes:
        wrote = complete_lines(max(resumes, key=lambda p: p.stat().st_mtime).read_bytes())
        assert wrote == final, (len(wrote), len(final))  # one history, nothing lost
        lost = "0 rows"
    print(f"can: `qec-kiln cancel` took {asked:.1f} s (stop request, run-batch's final upload, "
          f"SkyPilot's cancel); CANCELLED {cancelled:.1f} s after it began; at SIGTERM its "
          f"resume file held {held} bytes, the bucket "
          f"has {len(final)} bytes ({len(fragment_rows(final))} rows); lost: {lost} "
          f"(sync period {SYNC} s); recoveries {rec['recovery_count']}")
    assert rec["recovery_count"] == 0


def test_configuration_error_fails_at_once_without_a_restart(real):
    (rec,) = real.wait_states("cfg", {"FAILED", "FAILED_SETUP"}, 1)
    assert rec["status"] == "FAILED" and rec["recovery_count"] == 0, rec
    assert "exit code 2" in str(rec.get("failure_reason")), rec
    out = real.kiln("status", "--bucket", real.cfg_url, "--sweep", "cfg", env=real.auth_env).stdout
    print(out)
    assert "FAILED" in out and "exit 2: run-batch refused its input" in " ".join(out.split())
    log = real.job_log(rec["job_id"])
    assert "denied" in log.lower(), log[-2000:]


def real_sweeps(r: Real, prefixes: tuple[str, ...]) -> list[str]:
    """The bucket's sweeps whose names start with one of ``prefixes`` (collect's are named
    after its task folder and a digest)."""
    try:
        keys = r.opened().list_keys("")
    except Exception:
        return []
    return sorted({k.split("/", 1)[0] for k in keys if k.startswith(prefixes)})


def test_iter_collect_ships_a_notebook_decoder_to_the_pool_with_each_tasks_targets(real):
    """sinter's Python API on SkyPilot: ``qec_kiln.iter_collect`` with a decoder object of a
    notebook's class (shipped with the sweep, checked and loaded on the pool's worker) and a task
    with its own ``collection_options``: each task stops at exactly its own max_shots, every
    shot an error, with sinter's strong_ids, yielded as the rows reached the bucket."""
    real.collect_thread.join(WAIT + 1500)
    assert not real.collect_thread.is_alive(), "the collect on the pool did not end"
    if "error" in real.collect:
        raise real.collect["error"]
    out = real.collect["out"]
    print(out[-3000:])
    assert real.collect["rc"] == 0, out[-5000:]
    got = json.loads(next(ln for ln in out.splitlines() if ln.startswith("@@OUT@@"))[7:])
    shots: dict[str, list[int]] = {}
    for step in got["steps"]:
        for sid, n, errors, metadata in step:
            assert sid == got["ids"][str(metadata["t"])], (sid, metadata)
            total = shots.setdefault(sid, [0, 0])
            total[0] += n
            total[1] += errors
    assert shots == {got["ids"]["1"]: [300, 300], got["ids"]["2"]: [700, 700]}, shots
    assert any(step for step in got["steps"]), got  # the rows came as Progress objects


def test_warm_pool_runs_more_batches_than_workers_and_pool_down_leaves_none(real, tmp_path,
                                                                             monkeypatch):
    for k, v in real.aws.items():
        monkeypatch.setenv(k, v)
    assert real.pool_launched.wait(600) and not real.pool_errors, real.pool_errors
    started = time.monotonic()
    recs = real.wait_states("pl", {"SUCCEEDED"}, 2)
    assert {str(r.get("pool") or "") for r in recs} != {""}, recs  # they ran on the pool
    print(f"pool: 2 batches on 1 worker SUCCEEDED ({time.monotonic() - started:.0f} s of waiting "
          "in this test)")
    assert_merges_exactly(real, "pl", ["b000", "b001"], tasks=2, shots_each=POOL_SHOTS,
                          out=tmp_path / "merged.csv")
    down = real.kiln("pool", "down", timeout=300)
    print(down.stdout)

    def no_pool():
        left = real.sky.sdk("out = [str(p.get('name')) for p in "
                            "(sky.get(sky.jobs.pool_status(None)) or [])]")
        return not left

    real.sky.wait_for(no_pool, 300, "no pool left")
    real.sky.wait_for(lambda: "kiln-pool-" not in real.squeue(), 300, "no pool worker in Slurm")


def test_n_batches_in_one_request_run_their_rank_and_merge_exactly(real, monkeypatch, tmp_path):
    recs = real.wait_states("nj", {"SUCCEEDED"}, 2)
    print(f"nj: both SUCCEEDED {time.time() - real.launched_at:.0f} s after launch, "
          f"{time.monotonic() - getattr(real, 'preempted_at', 0):.0f} s after the preemption")
    for k, v in real.aws.items():
        monkeypatch.setenv(k, v)
    batches = ["b000", "b001"]
    ids = real.job_ids("nj")
    assert sorted(r["job_id"] for r in recs) == ids
    assert {r["job_id"]: r["recovery_count"] for r in recs} == {ids[0]: 0, ids[1]: 1}
    for rank, (batch, job_id) in enumerate(zip(batches, ids, strict=True)):
        log = real.job_log(job_id)
        assert f"{batch}: batch finished" in log, log[-3000:]  # rank k ran batch k
        print(f"nj job {job_id} (rank {rank}): qec-kiln setup {setup_seconds(log)} s"
              + (" (the first run's, then the recovery's)" if rank else ""))
        assert setup_seconds(log), log[-3000:]
    # The recovered batch resumed from its fragment: nothing counted twice, nothing missing.
    assert "restored" in real.read("nj/logs/b001.log").decode()
    assert len(fragment_rows(real.fragment("nj", "b001"))) > getattr(real, "rows_before_preemption", 0)
    assert_merges_exactly(real, "nj", batches, tasks=2, shots_each=LONG_SHOTS,
                          out=tmp_path / "merged.csv")
    # The task the server received is the dry run's task_yaml (SkyPilot keeps the user's YAML).
    sent = yaml.safe_load(real.dry_nj["backend"]["task_yaml"])
    stored = sorted((real.sky.state_dir / "home" / ".sky" / "managed_jobs").glob("kiln-nj-*.yaml"))
    assert stored, list((real.sky.state_dir / "home" / ".sky").rglob("*.yaml"))[:20]
    received = yaml.safe_load(list(yaml.safe_load_all(stored[-1].read_text()))[-1]
                              ["_user_specified_yaml"])
    assert received == sent
    assert real.dry_nj["backend"]["num_jobs"] == 2


def test_status_reads_the_real_queue_and_the_plan_learns_the_start_up(real, monkeypatch):
    real.wait_states("nj", {"SUCCEEDED"}, 2)
    doc = json.loads(real.kiln("status", "--bucket", real.url, "--sweep", "nj", "--json").stdout)
    assert re.search(r'"recoveries": 1\b', json.dumps(doc)), doc  # from the real queue_v2
    # status recorded the start-up it saw (rank 0; rank 1 recovered); the next dry run for
    # --infra slurm plans with it, and with the YAML's cpus: 1 as its processes.
    monkeypatch.setenv("QEC_KILN_HOME", real.env["QEC_KILN_HOME"])
    measured = startup.measured_startup_seconds("slurm")
    assert measured is not None and 5 < measured < WAIT, measured
    plan = json.loads(real.kiln("launch", str(real.root / "plan"), "--backend", "skypilot",
                                "--infra", "slurm", "--yaml", str(real.root / "job.yaml"),
                                "--bucket", real.url, "--name", "plan", "--jobs", "1",
                                "--max-shots", "1000", "--dry-run", "--json").stdout)
    print(f"measured start-up for --infra slurm (submitted to running): {measured:.1f} s")
    assert abs(_find(plan, "startup_seconds_per_batch") - measured) < 0.5, plan
    assert _find(plan, "processes_per_batch") == 1  # the YAML's cpus: 1, not 16


def _find(doc, key):
    """The first value of ``key`` anywhere in a JSON document."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        doc = list(doc.values())
    if isinstance(doc, list):
        for v in doc:
            found = _find(v, key)
            if found is not None:
                return found
    return None

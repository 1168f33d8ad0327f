"""SkyPilot backend: every batch of a sweep is one SkyPilot *managed job*, all submitted at once.

What ``launch`` runs (one request to SkyPilot for the whole sweep)::

    sky jobs launch --yes --detach-run --name kiln-<sweep> --num-jobs N \\
        --env KILN_BUCKET=<url> --env KILN_SWEEP=<sweep> --env KILN_BATCHES=b000,b003,... \\
        --env KILN_VERSION=<qec-kiln version> --env KILN_SYNC_SECONDS=30 \\
        [--secret NAME ...] <state>/skypilot/<sweep>/job.yaml

SkyPilot gives job k of the N the variable ``SKYPILOT_JOB_RANK=k`` (0..N-1), and the YAML's run
line picks ``KILN_BATCHES[k]`` (``qec-kiln run-batch --batches "$KILN_BATCHES" --index
"$SKYPILOT_JOB_RANK"``). SkyPilot 0.14.1 assigns the ranks in the order of the sorted job ids of
the request (``sky/jobs/server/core.py``: ``job_id_to_rank``), so the k-th smallest job id runs
batch k; ``launch`` records that mapping under the state directory for ``job_states``.

All jobs of one sweep share the name ``kiln-<sweep>``. ``sky jobs cancel -n NAME`` refuses to
cancel when several running jobs share a name (``sky/jobs/utils.py: cancel_job_by_name``), so
``cancel`` looks the job ids up in the queue and cancels them by id. Queue and cancel go through
SkyPilot's Python SDK (``sky.jobs.queue_v2``, ``sky.jobs.cancel``), whose typed records carry
``failure_reason`` and ``recovery_count``.

The task YAML comes from ``--yaml`` or the copies of ``configs/sinter_job*.yaml`` packaged as
``qec_kiln/data/`` (a test keeps them byte-identical): an installed qec-kiln has no repository
checkout to read, and one source of truth per run avoids "works in the checkout only" surprises.

Secrets never reach a file: a YAML ``secrets: {NAME: null}`` entry becomes ``--secret NAME`` and
SkyPilot's CLI reads the value from the caller's environment. Inline secret values are refused.

``import sky`` takes about a second, so it happens only inside the functions that need it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from qec_kiln._argtypes import SYNC_SECONDS
from qec_kiln._atomic import atomic_write
from qec_kiln._backends.base import (
    BackendOptions,
    JobState,
    LaunchRequest,
    Submission,
    append_launch_record,
    is_active,
    quote_argv,
    read_launch_records,
)
from qec_kiln._backends.remote import (
    RemoteBackend,
    kiln_version,
    packaged_text,
    read_template,
    rendered_by,
)
from qec_kiln._backends.skypilot import pool as pools
from qec_kiln._backends.skypilot import startup
from qec_kiln._backends.skypilot.node import apply_node_install, node_identity
from qec_kiln._backends.skypilot.options import SkyPilotOptions
from qec_kiln._backends.skypilot.parse import (
    QUEUE_FIELDS,
    controller_warnings,
    map_queue_to_batches,
    record_dict,
    sky_state,
)
from qec_kiln._backends.skypilot.render import (
    apply_options,
    dump_yaml,
    refuse_secret_values,
    validate_task,
)
from qec_kiln._backends.skypilot.render import secret_names as declared_secrets
from qec_kiln._backends.skypilot.sdk import (
    active_ids,
    import_sky,
    job_name,
    one_line,
    run_sky,
    state_dir,
    submit_managed_jobs,
)
from qec_kiln._errors import KilnError
from qec_kiln._node.stop import request_stop
from qec_kiln._planning.capacity import Capacity
from qec_kiln._storage import open_bucket

DEFAULT_YAML = "sinter_job.yaml"
DEFAULT_GPU_YAML = "sinter_job_gpu.yaml"


@dataclasses.dataclass
class Rendered:
    """A filled-in, validated task YAML and the command that launches it."""

    yaml_text: str
    env_overrides: list[tuple[str, str]]
    launch_argv: list[str]
    source: str  # the YAML it came from (a path, or "packaged:<name>")
    yaml_path: Path  # where launch writes yaml_text
    job_name: str
    secret_names: list[str]
    notes: list[str]
    task_config: dict[str, Any]  # the exact task (envs filled, secrets by name only)
    file_mounts: dict[str, str]  # node path -> local path, as SkyPilot receives them
    install: str  # what the nodes install, and from where
    identity: str  # which identity the nodes use for the bucket
    pool: pools.PoolRendered | None = None  # --workers K: the pool; task_config is its job
    pool_argv: list[str] = dataclasses.field(default_factory=list)


class SkyPilotBackend(RemoteBackend):
    """Batches as SkyPilot managed jobs (spot by default, recovered by SkyPilot).

    ``job_states`` never raises for an unreachable SkyPilot: it returns ``{}`` and leaves the
    reason in ``self.warning`` so that ``status`` still shows fragment progress from the bucket.

    >>> b = SkyPilotBackend()
    >>> b.capacity(b.options()).processes, b.bucket_problem("s3://b") is None
    (16, True)
    """

    name = "skypilot"
    options_type = SkyPilotOptions

    @classmethod
    def options(cls, value: BackendOptions | Mapping[str, Any] | None = None) -> SkyPilotOptions:
        opts = super().options(value)
        assert isinstance(opts, SkyPilotOptions)
        return opts
    startup_seconds = 360.0
    default_processes = 16
    queue_workers = True  # --workers K: a SkyPilot pool of K warm workers (skypilot/pool.py)
    default_runner = staticmethod(run_sky)
    cancel_wait_s = 60.0  # how long cancel waits for SkyPilot to mark its jobs CANCELLING
    cancel_poll_s = 2.0

    def capacity(self, options: BackendOptions) -> Capacity:
        """Processes from the task's resources (``--cpus``, else the YAML's ``cpus``); start-up as
        measured on this --infra by earlier runs (else 360 s). A warm pool worker starts a batch
        in seconds (its first start waits for a new VM); a managed job always waits for one."""
        opts = self.options(options)
        cap = super().capacity(opts)
        procs = opts.processes or startup.processes_from_task(
            opts, DEFAULT_GPU_YAML if opts.gpus else DEFAULT_YAML) or cap.processes
        first = startup.measured_startup_seconds(opts.infra) or self.startup_seconds
        cap = dataclasses.replace(cap, processes=procs, min_processes=opts.processes or procs)
        if not opts.workers:
            return dataclasses.replace(cap, startup_seconds=first)
        return dataclasses.replace(cap, startup_seconds=pools.WARM_STARTUP_SECONDS,
                                   first_startup_seconds_=first)

    def pool_command(self, action: str, name: str | None) -> list[str]:
        """``qec-kiln pool status|down [NAME]`` through the SDK (default: every kiln-pool-*)."""
        records = pools.existing_pools([name] if name else None)
        if not name:
            records = [r for r in records if str(r.get("name", "")).startswith(pools.POOL_PREFIX)]
        if action == "status":
            return pools.status_lines(records) or [f"no pool {name or 'kiln-pool-*'} found"]
        names = [str(r["name"]) for r in records if r.get("name")]
        if not names:
            raise KilnError(f"no pool {name or 'kiln-pool-*'} found; see `qec-kiln pool status`")
        pools.pool_down(names)
        return [f"took down pool(s) {', '.join(names)}"]

    def launch_problem(self) -> str | None:
        """SkyPilot is an optional extra: without it nothing can be rendered or launched."""
        try:
            import_sky()
        except KilnError as e:
            return str(e)
        return None

    def bucket_problem(self, bucket_url: str) -> str | None:
        """Cloud nodes cannot see this machine's folders."""
        if bucket_url.startswith(("s3://", "gs://")):
            return None
        return (f"--bucket {bucket_url!r} is a folder on this machine, which SkyPilot's nodes "
                "cannot see; use s3://BUCKET or gs://BUCKET (SkyPilot volumes/PVCs are not "
                "supported yet)")

    def missing_command(self, argv: Sequence[str], what: str) -> str:
        return (f"cannot {what} SkyPilot jobs: the `sky` command was not found; "
                "pip install 'qec-kiln[skypilot]' (plus your clouds' extras, e.g. 'skypilot[aws]')")

    # ------------------------------------------------------------------ rendering

    def render(self, request: LaunchRequest) -> Rendered:
        """The filled-in task YAML, its env overrides and the launch command, validated
        offline."""
        opts = self.options(request.options)
        if not request.batch_ids:
            raise KilnError("no batches to launch")
        bad = [b for b in request.batch_ids if not b or "," in b or b != b.strip()]
        if bad:
            raise KilnError(f"batch id {bad[0]!r} cannot go into a comma list; rename the batch")
        source, text = read_template(opts.yaml_path,
                                     DEFAULT_GPU_YAML if opts.gpus else DEFAULT_YAML,
                                     "SkyPilot task YAML")
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            raise KilnError(f"{source}: not valid YAML: {one_line(e)}") from e
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise KilnError(
                f"{source}: must hold exactly one SkyPilot task (a mapping); found {len(docs)} "
                "documents"
            )
        cfg: dict[str, Any] = docs[0]
        notes: list[str] = []
        apply_options(cfg, opts, source, notes)

        secret_names = declared_secrets(cfg, source)
        install = apply_node_install(
            cfg, bucket_url=request.bucket_url, decoders=request.decoders,
            custom=request.custom_decoders_module_function, image=opts.image,
            python=request.python,
            pip_spec=opts.kiln_pip_spec, log=lambda m: print(m, file=sys.stderr))
        version = request.kiln_version or kiln_version()
        env_overrides = [
            ("KILN_BUCKET", request.bucket_url),
            ("KILN_SWEEP", request.sweep),
            ("KILN_BATCHES", ",".join(request.batch_ids)),
            ("KILN_VERSION", version),
            ("KILN_SYNC_SECONDS", f"{opts.sync_seconds:g}"),
        ]
        if opts.processes:
            env_overrides.append(("KILN_PROCESSES", str(opts.processes)))
        env_overrides += install.envs

        name = job_name(request.sweep)
        validate_task(cfg, env_overrides, source, name)
        identity = node_identity(request.bucket_url, opts.infra, secret_names)
        task_cfg = copy.deepcopy(cfg)
        task_cfg["name"] = name
        task_cfg["envs"] = {**{str(k): None if v is None else str(v)
                               for k, v in (cfg.get("envs") or {}).items()},
                            **dict(env_overrides)}
        if secret_names:
            task_cfg["secrets"] = dict.fromkeys(secret_names)

        pool = pool_argv = None
        if opts.workers:
            pool = pools.render_pool(self, opts, request, task_cfg, notes)
            task_cfg = pool.job_config
            env_overrides = [(k, v) for k, v in env_overrides if k not in pools.INSTALL_ENVS]
        if opts.pool and not opts.workers:
            raise KilnError(f"--pool {opts.pool}: give --workers K too (a pool's workers take "
                            "the batches in turn)")
        yaml_text = rendered_by(version, source, "; see that file for comments") + dump_yaml(task_cfg)
        yaml_path = state_dir(request.sweep) / "job.yaml"
        argv = ["sky", "jobs", "launch", "--yes", "--detach-run", "--name", name,
                "--num-jobs", str(len(request.batch_ids))]
        if pool:
            argv[5:5] = ["--pool", pool.name]
            pool_argv = ["sky", "jobs", "pool", "apply", "--yes", "--pool", pool.name,
                         str(yaml_path.parent / "pool.yaml")]
        for key, value in env_overrides:
            argv += ["--env", f"{key}={value}"]
        for key in secret_names:
            argv += ["--secret", key]
        argv.append(str(yaml_path))
        refuse_secret_values(source, yaml_text, argv)
        mounts = pool.pool_config.get("file_mounts") if pool else task_cfg.get("file_mounts")
        return Rendered(yaml_text, env_overrides, argv, source, yaml_path, name, secret_names,
                        notes, task_cfg, dict(mounts or {}), install.summary, identity,
                        pool, pool_argv or [])

    def sky_task(self, r: Rendered) -> Any:
        """The ``sky.Task`` handed to ``sky.jobs.launch``: the rendered task plus secret values
        taken from this environment (in memory only)."""
        import sky

        secrets = [(k, os.environ[k]) for k in r.secret_names]
        try:
            return sky.Task.from_yaml_config(copy.deepcopy(r.task_config),
                                             secrets_overrides=secrets or None)
        except Exception as e:  # SkyPilot raises ValueError and its own errors
            raise KilnError(f"{r.source}: {one_line(e)}") from e

    def describe_json(self, request: LaunchRequest) -> dict[str, Any]:
        """The dry run's ``backend`` section: the exact task and its file mounts."""
        r = self.render(request)
        out = {"task_yaml": dump_yaml(r.task_config), "file_mounts": r.file_mounts,
               "job_name": r.job_name, "num_jobs": len(request.batch_ids),
               "node_install": r.install, "node_identity": r.identity,
               "secrets": r.secret_names,
               "controller_warnings": self._controller_warnings(request)}
        if r.pool:
            out.update(pool=r.pool.name, workers=r.pool.workers,
                       pool_yaml=pools.pool_yaml(r.pool),
                       pool_idle=pools.idle_cost_line(r.pool.name, r.pool.workers,
                                                      request.node_hour_price)[2:])
        return out

    def _controller_warnings(self, request: LaunchRequest) -> list[str]:
        n = len(request.batch_ids)
        return controller_warnings(min(n, request.options.workers or n), n)

    def describe(self, request: LaunchRequest) -> str:
        r = self.render(request)
        lines = pools.describe_lines(r.pool, r.pool_argv, request.node_hour_price) if r.pool \
            else []
        lines += [
            f"# SkyPilot task YAML from {r.source}, validated offline with SkyPilot's schema;",
            f"# launch writes it to {r.yaml_path}",
            r.yaml_text.rstrip("\n"),
            "",
            "# Environment given at launch (--env), overriding the YAML's envs:",
            *(f"#   {k}={v!r}" for k, v in r.env_overrides),
        ]
        if r.secret_names:
            lines += [
                "# Secrets passed by name (--secret); SkyPilot reads their values from your",
                "# environment at launch; qec-kiln writes them to no file:",
                *(f"#   {k}" for k in r.secret_names),
            ]
        lines += [f"# Note: {n}" for n in r.notes]
        lines += [f"# Warning: {w}" for w in self._controller_warnings(request)]
        lines += [
            f"# Node install: {r.install}",
            f"# Bucket identity on the nodes: {r.identity}",
            f"# One request, {len(request.batch_ids)} managed job(s) named {r.job_name}; job "
            "with SKYPILOT_JOB_RANK=k runs batch k:",
            "#   " + " ".join(f"{k}={b}" for k, b in enumerate(request.batch_ids)),
            f"# launch calls sky.jobs.launch(task, name={r.job_name!r}, "
            + (f"pool={r.pool.name!r}, " if r.pool else "")
            + f"num_jobs={len(request.batch_ids)}); the same from a shell:",
            quote_argv(r.launch_argv),
        ]
        return "\n".join(lines) + "\n"

    def launch(self, request: LaunchRequest) -> Submission:
        r = self.render(request)
        atomic_write(r.yaml_path, r.yaml_text)
        task = self.sky_task(r)
        started = time.time()
        opts = self.options(request.options)
        pool_note = ""
        if r.pool:
            pool_note = "; " + pools.launch_pool(r.pool, r.yaml_path.parent / "pool.yaml",
                                                 request.node_hour_price, opts.keep_pool)
        ids = submit_managed_jobs(task, r.job_name, len(request.batch_ids),
                                  pool=r.pool.name if r.pool else None)
        job_ids: dict[str, str] = {}
        message = (f"submitted {len(request.batch_ids)} SkyPilot managed job(s) named "
                   f"{r.job_name}{pool_note}; {r.install}; bucket identity: {r.identity}")
        if len(ids) == len(request.batch_ids):
            # SkyPilot ranks the jobs of one request by sorted job id (job_id_to_rank).
            job_ids = {b: str(i) for b, i in zip(request.batch_ids, sorted(ids), strict=True)}
            message += ": " + ", ".join(f"{b}={i}" for b, i in job_ids.items())
        else:
            message += f"; SkyPilot returned job ids {ids}; see `sky jobs queue`"
            ids = []
        append_launch_record(
            r.yaml_path.parent / "launches.json",
            {
                "bucket": request.bucket_url,
                "sweep": request.sweep,
                "job_name": r.job_name,
                "batches": list(request.batch_ids),
                "job_ids": sorted(ids),
                "launched_at": started, "infra": opts.infra, "sync_seconds": opts.sync_seconds,
                **({"pool": r.pool.name, "workers": r.pool.workers,
                    "keep_pool": opts.keep_pool} if r.pool else {}),
            },
        )
        return Submission(job_ids=job_ids, commands=[list(r.launch_argv)], message=message)

    def job_states(self, bucket_url: str, sweep: str) -> dict[str, JobState]:
        """States of the sweep's jobs from ``sky.jobs.queue_v2`` (with why a job failed and how
        often it recovered).

        Returns ``{}`` with the reason in ``self.warning`` when SkyPilot cannot be asked (not
        installed, no API server, no controller): status then shows fragment progress only.
        """
        self.warning = self.idle = ""
        name = job_name(sweep)
        records = self._queue(name)
        if records is None:
            return {}
        launches = read_launch_records(state_dir(sweep) / "launches.json")
        launches = [x for x in launches if x.get("bucket") in (None, bucket_url)]
        states, unknown = map_queue_to_batches(records, name, launches)
        startup.record_from_queue(records, launches)  # what the next plan for this infra assumes
        self.idle = pools.idle_warning(records, launches, any(s.active for s in states.values()))
        if unknown:
            self.warning = (
                f"{len(unknown)} SkyPilot job(s) named {name} ({', '.join(map(str, unknown))}) "
                "are not in this machine's launch record; their batches are unknown here"
            )
        return states

    def warnings(self) -> list[str]:
        return [w for w in (self.warning, getattr(self, "idle", "")) if w]

    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        """Cancel the sweep's active jobs by id. Running jobs are first asked to stop through
        the bucket (``_node/stop.py``: run-batch uploads every complete line and says so, within
        about one sync period), since SkyPilot's graceful cancel SIGKILLs the task on its Slurm
        infra and Kubernetes; then SkyPilot cancels them (see docs/reliability.md).

        Never by name: with several jobs of one name SkyPilot cancels none. The SDK's cancel
        returns nothing, so the queue is read again: only jobs now CANCELLING or CANCELLED are
        reported, and a cancel that cancelled none of its jobs raises.
        """
        name = job_name(sweep)
        records = self._queue(name)
        if records is None:
            raise KilnError(f"cannot list the jobs named {name}, so nothing was cancelled: "
                            f"{self.warning}")
        ids = active_ids(records, name)
        if not ids:
            return []
        running = [str(r["job_id"]) for r in records if int(r.get("job_id") or -1) in ids
                   and str(r.get("status") or "").upper() == "RUNNING"]
        if running:
            self.ask_to_stop(bucket_url, sweep, running)
        sky = import_sky()
        try:
            sky.get(sky.jobs.cancel(job_ids=ids, graceful=True))
        except Exception as e:  # SkyPilot raises its own errors (no controller, ...)
            raise KilnError(f"sky.jobs.cancel failed for jobs {ids} of {name}: "
                            f"{one_line(e)}") from e
        # SkyPilot marks a running job CANCELLING only when its controller reads the signal.
        deadline = time.monotonic() + self.cancel_wait_s
        while True:
            after = self._queue(name)
            if after is None:
                raise KilnError(f"asked SkyPilot to cancel jobs {ids} of {name} but cannot "
                                f"list them to check: {self.warning}")
            status = {int(r["job_id"]): str(r.get("status") or "").upper() for r in after
                      if r.get("job_name") == name and r.get("job_id") is not None}
            done = [i for i in ids if status.get(i) in ("CANCELLING", "CANCELLED")]
            waiting = [i for i in ids if i not in done and is_active(sky_state(status.get(i, "")))]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(self.cancel_poll_s)
        if not done:
            raise KilnError(
                f"SkyPilot cancelled none of jobs {ids} of {name}: they are now "
                + ", ".join(f"{i} {status.get(i, 'missing')}" for i in ids)
                + "; see `sky jobs queue`")
        return [str(i) for i in done]

    def ask_to_stop(self, bucket_url: str, sweep: str, job_ids: list[str]) -> list[str]:
        """Ask running jobs to stop through the bucket and wait (one sync period and 30 s at
        most) until they have uploaded every complete line; the ids that did."""
        syncs = [float(x.get("sync_seconds") or SYNC_SECONDS) for x in
                 read_launch_records(state_dir(sweep) / "launches.json")] or [SYNC_SECONDS]
        return request_stop(open_bucket(bucket_url), sweep, job_ids, timeout=max(syncs) + 30)

    # ------------------------------------------------------------------ plumbing

    def _queue(self, name: str | None = None) -> list[dict[str, Any]] | None:
        """This user's queue records (dicts, ``status`` as a name) from ``sky.jobs.queue_v2``,
        or None (with ``self.warning`` set) when SkyPilot can't be asked."""
        try:
            sky = import_sky()
            # Only the sweep's jobs (a LIKE on the server; map_queue_to_batches keeps the
            # exact name) and only the fields shown.
            result = sky.get(sky.jobs.queue_v2(refresh=False, skip_finished=False,
                                               fields=list(QUEUE_FIELDS), name_match=name))
        except KilnError as e:
            self.warning = f"SkyPilot job states unavailable: {e}"
            return None
        except Exception as e:  # no API server, no controller, ...: SkyPilot's own errors
            self.warning = f"SkyPilot job states unavailable: {one_line(e)}"
            return None
        records = result[0] if isinstance(result, tuple) else result
        return [record_dict(r) for r in records or []]


packaged_yaml_text = packaged_text

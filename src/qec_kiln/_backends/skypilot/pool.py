"""SkyPilot pools: K warm workers that take a sweep's B batches in turn (``--workers K``).

The pool task (``configs/sinter_pool.yaml``) carries the resources, the node install (wheel file
mount, envs and setup: SkyPilot ignores a pool job's own ``setup`` and ``file_mounts``) and
``pool: {workers: K}``; never ``job_recovery``, which SkyPilot refuses in a pool
(``sky/serve/serve_utils.py: validate_service_task``). The job task keeps only name, envs,
secrets and run, and asks for no resources: SkyPilot then schedules it alone on an idle worker
(``serve_utils.get_next_cluster_name``: a job without cpus/memory/accelerators takes a whole
worker), so one batch per worker at a time, with all its cores.

``launch`` makes two SDK calls::

    sky.jobs.pool_apply(pool_task, "kiln-pool-<hash>", mode=ROLLING)   # only if absent
    sky.jobs.launch(job_task, name="kiln-<sweep>", pool="kiln-pool-<hash>", num_jobs=B)

The name hashes the pool task without its worker count, with each mounted file by content:
the next sweep with the same install and resources finds the workers warm.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from qec_kiln._errors import KilnError

POOL_YAML = "sinter_pool.yaml"
POOL_PREFIX = "kiln-pool-"
#: Seconds a batch takes to start on a warm worker (scheduling + venv start), and on a cold one.
WARM_STARTUP_SECONDS = 20.0
#: What a pool job's task keeps; resources, setup and file_mounts belong to the pool.
JOB_KEYS = ("name", "envs", "secrets", "run")
#: The envs that the pool's setup reads (the node install); the job task keeps the others.
INSTALL_ENVS = ("KILN_WHEEL", "KILN_PIP_SPEC", "KILN_NODE_REQUIREMENTS", "KILN_PYTHON")


def pool_name(pool_cfg: dict[str, Any]) -> str:
    """``kiln-pool-<12 hex>``: a hash of the pool task without its worker count or name, with
    every mounted local file replaced by the sha256 of its bytes (machine-independent).

    >>> a = pool_name({"resources": {"cpus": "16+"}, "pool": {"workers": 2}})
    >>> a == pool_name({"resources": {"cpus": "16+"}, "pool": {"workers": 8}, "name": "x"})
    True
    >>> a == pool_name({"resources": {"cpus": "8+"}, "pool": {"workers": 2}}), a[:10]
    (False, 'kiln-pool-')
    """
    cfg = {k: v for k, v in pool_cfg.items() if k not in ("name", "pool")}
    mounts = cfg.get("file_mounts") or {}
    cfg["file_mounts"] = {remote: _file_sha256(Path(local)) for remote, local in mounts.items()}
    text = json.dumps(cfg, sort_keys=True, default=str)
    return POOL_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass
class PoolRendered:
    """The pool task, its name and worker count, and the job task queued on it."""

    name: str
    workers: int
    pool_config: dict[str, Any]  # the pool task (secrets never: the job task has them by name)
    job_config: dict[str, Any]  # name, envs, secrets, run: no resources, setup or file mounts
    source: str


def render_pool(backend: Any, opts: Any, request: Any, task_cfg: dict[str, Any],
                notes: list[str]) -> PoolRendered:
    """Fill ``configs/sinter_pool.yaml`` (resources from the options, the node install, K) and
    strip the job task ``task_cfg`` to what a pool job uses; validated by SkyPilot, offline."""
    from qec_kiln._backends.remote import read_template
    from qec_kiln._backends.skypilot.node import apply_node_install

    if opts.gpus:
        raise KilnError(f"--workers {opts.workers} with --gpus: GPU pools are not supported "
                        "yet; leave out --workers (one managed job per batch)")
    source, text = read_template(None, POOL_YAML, "SkyPilot pool YAML")
    cfg = yaml.safe_load(text)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("pool"), dict):
        raise KilnError(f"{source}: needs a 'pool:' mapping (e.g. pool: {{workers: 1}})")
    from qec_kiln._backends.skypilot.render import apply_options

    apply_options(cfg, opts, source, notes)
    install = apply_node_install(
        cfg, bucket_url=request.bucket_url, decoders=request.decoders,
        custom=request.custom_decoders_module_function, image=opts.image,
        python=request.python,
        pip_spec=opts.kiln_pip_spec)
    cfg["envs"] = {**{str(k): None if v is None else str(v)
                      for k, v in (cfg.get("envs") or {}).items()}, **dict(install.envs)}
    # No more workers than the sweep has batches: idle workers bill.
    workers = max(1, min(int(opts.workers), request.num_batches_total or len(request.batch_ids)))
    cfg["pool"]["workers"] = workers
    name = opts.pool or pool_name(cfg)
    cfg["name"] = name
    validate_pool(cfg, source)
    from sky.utils import common_utils

    try:
        common_utils.check_cluster_name_is_valid(name)
    except Exception as e:
        raise KilnError(f"--pool {name!r}: {' '.join(str(e).split())}") from e
    job = {k: copy.deepcopy(task_cfg[k]) for k in JOB_KEYS if k in task_cfg}
    job["envs"] = {k: v for k, v in (task_cfg.get("envs") or {}).items()
                   if k not in INSTALL_ENVS}
    return PoolRendered(name, workers, cfg, job, source)


def validate_pool(pool_cfg: dict[str, Any], source: str) -> Any:
    """SkyPilot's own schema, task loader and pool check (offline); return the ``sky.Task``."""
    import sky
    from sky.serve import serve_utils
    from sky.utils import common_utils, schemas

    try:
        common_utils.validate_schema(copy.deepcopy(pool_cfg), schemas.get_task_schema(),
                                     "invalid SkyPilot pool YAML: ")
        task = sky.Task.from_yaml_config(copy.deepcopy(pool_cfg))
        serve_utils.validate_service_task(task, pool=True)
    except Exception as e:  # SkyPilot raises ValueError, jsonschema and its own errors
        raise KilnError(f"{source} (as a pool): {' '.join(str(e).split())}") from e
    return task


def existing_pools(names: list[str] | None = None) -> list[dict[str, Any]]:
    """``sky.jobs.pool_status(names)``: SkyPilot's pool records ([] when there are none)."""
    import sky

    try:
        records = sky.get(sky.jobs.pool_status(names))
    except Exception as e:  # no API server, an old server, ...
        raise KilnError(f"sky.jobs.pool_status failed: {' '.join(str(e).split())}") from e
    return [r for r in records or [] if isinstance(r, dict)]


def ensure_pool(task: Any, name: str, workers: int) -> str:
    """Create pool ``name`` (``sky.jobs.pool_apply``) unless it is up; grow it to ``workers``.
    Returns what was done, one line."""
    import sky
    from sky.serve import serve_utils

    found = [r for r in existing_pools([name]) if r.get("name") == name]
    try:
        if not found:
            sky.stream_and_get(sky.jobs.pool_apply(task, name, serve_utils.UpdateMode.ROLLING))
            return f"created pool {name} with {workers} worker(s)"
        have = int(found[0].get("target_num_replicas") or 0)
        if have < workers:
            sky.stream_and_get(sky.jobs.pool_apply(None, name, serve_utils.UpdateMode.ROLLING,
                                                   workers=workers))
            return f"reused pool {name}, grown from {have} to {workers} worker(s)"
    except Exception as e:
        raise KilnError(f"sky.jobs.pool_apply failed for {name}: {' '.join(str(e).split())}"
                        ) from e
    return f"reused warm pool {name} ({have} worker(s))"


def idle_cost_line(name: str, workers: int, node_hour_price: float | None) -> str:
    """What the pool bills while idle (no idle autostop for pool workers, skypilot#8395).

    >>> idle_cost_line("kiln-pool-ab", 4, 0.16)
    '# pool kiln-pool-ab bills while idle: 4 worker(s), about $0.64/hour; `qec-kiln pool down kiln-pool-ab`'
    """
    price = (f", about ${workers * node_hour_price:.2f}/hour" if node_hour_price is not None
             else " (--price-per-cpu-hour gives the cost)")
    return (f"# pool {name} bills while idle: {workers} worker(s){price}; "
            f"`qec-kiln pool down {name}`")


def idle_warning(records: list[dict[str, Any]], launches: list[dict[str, Any]],
                 states_active: bool) -> str:
    """``pool X idle: N workers billing; ...`` when the sweep's jobs all ended and no job in
    the queue still uses its pool (launched without --keep-pool); else "".

    >>> rec = [{"job_id": 1, "pool": "kiln-pool-ab", "status": "SUCCEEDED"}]
    >>> idle_warning(rec, [{"pool": "kiln-pool-ab", "workers": 2}], False)
    'pool kiln-pool-ab idle: 2 workers billing; `qec-kiln pool down kiln-pool-ab`'
    >>> idle_warning(rec, [{"pool": "kiln-pool-ab", "workers": 2, "keep_pool": True}], False)
    ''
    """
    if states_active:
        return ""
    pools = {x["pool"]: int(x.get("workers") or 0) for x in launches
             if x.get("pool") and not x.get("keep_pool")}
    busy = {r.get("pool") for r in records
            if str(r.get("status") or "").upper() in _ACTIVE_SKY}
    lines = [f"pool {p} idle: {k} workers billing; `qec-kiln pool down {p}`"
             for p, k in sorted(pools.items()) if p not in busy]
    return "; ".join(lines)


_ACTIVE_SKY = frozenset({"PENDING", "SUBMITTED", "STARTING", "RUNNING", "RECOVERING",
                         "CANCELLING", "WINDING_DOWN"})


def describe_lines(pool: PoolRendered, pool_argv: list[str], node_hour_price: float | None
                   ) -> list[str]:
    """The dry run's pool part: the pool task YAML and the SDK call that creates it."""
    from qec_kiln._backends.base import quote_argv

    text = pool_yaml(pool)
    return [
        f"# SkyPilot pool task from {pool.source} (experimental in SkyPilot 0.14), validated",
        "# offline with SkyPilot's schema, task loader and pool check; launch writes it to",
        f"# {pool_argv[-1]}",
        text.rstrip("\n"),
        "",
        f"# launch first calls sky.jobs.pool_status([{pool.name!r}]); if absent, "
        f"sky.jobs.pool_apply(pool_task, {pool.name!r}, mode=ROLLING) (if it has fewer "
        f"workers, pool_apply(None, {pool.name!r}, workers={pool.workers})); from a shell:",
        quote_argv(pool_argv),
        idle_cost_line(pool.name, pool.workers, node_hour_price),
        "# The job task below runs on the pool: envs and run only (its resources are the whole",
        "# worker, one batch per worker at a time).",
        "",
    ]


def pool_yaml(pool: PoolRendered) -> str:
    """The pool task as YAML (block scalars for setup), what ``sky jobs pool apply`` reads."""
    from qec_kiln._backends.skypilot.render import dump_yaml

    return dump_yaml(pool.pool_config)


def launch_pool(pool: PoolRendered, path: Path, node_hour_price: float | None,
                keep: bool) -> str:
    """Write the pool task to ``path`` and make sure the pool is up; one line saying what was
    done and what it costs idle."""
    from qec_kiln._atomic import atomic_write

    atomic_write(path, pool_yaml(pool))
    done = ensure_pool(validate_pool(pool.pool_config, pool.source), pool.name, pool.workers)
    bill = idle_cost_line(pool.name, pool.workers, node_hour_price)[2:]
    return f"{done}; {bill}" + ("" if not keep else " (--keep-pool: kept after the sweep)")


def pool_down(names: list[str]) -> None:
    """``sky.jobs.pool_down(names)``: delete the pools and their workers."""
    import sky

    try:
        sky.stream_and_get(sky.jobs.pool_down(names))
    except Exception as e:
        raise KilnError(f"sky.jobs.pool_down failed for {', '.join(names)}: "
                        f"{' '.join(str(e).split())}") from e


def status_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per pool record: name, status, workers ready/target, jobs on them.

    >>> status_lines([{"name": "kiln-pool-ab", "status": "READY", "target_num_replicas": 2,
    ...                "replica_info": [{"status": "READY", "used_by": [4]}, {"status": "READY"}]}])
    ['kiln-pool-ab  READY  workers 2/2 ready  jobs 4']
    """
    out = []
    for r in records:
        workers = r.get("replica_info") or []
        ready = sum(1 for w in workers if str(w.get("status", "")).upper().endswith("READY"))
        jobs = [str(j) for w in workers for j in (w.get("used_by") or [])]
        status = str(getattr(r.get("status"), "value", r.get("status")))
        out.append(f"{r.get('name')}  {status}  workers {ready}/{r.get('target_num_replicas')} "
                   f"ready  jobs {','.join(jobs) or '-'}")
    return out


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return str(path)

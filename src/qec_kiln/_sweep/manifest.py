"""The sweep's manifest: what was planned, with which targets and versions, stored once in the
bucket as ``<sweep>/manifest.json`` before any job starts.

Bucket layout of a sweep::

    <bucket>/<sweep>/manifest.json        this file (written last at launch: the commit point)
    <bucket>/<sweep>/circuits/<key>       the circuits, keyed by their path in the sweep folder
    <bucket>/<sweep>/decoders/<sha256>.pkl  custom decoder/sampler objects (API's custom_decoders),
                                            cloudpickled, keyed by their digest (_sweep/shipped.py)
    <bucket>/<sweep>/fragments/<batch>.csv  one sinter resume CSV per batch, only ever overwritten
                                            whole with a longer prefix of itself
    <bucket>/<sweep>/logs/<batch>.log     the tail of each batch's run-batch log
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from qec_kiln._errors import KilnError, Log, ObjectNotFound
from qec_kiln._storage import Bucket
from qec_kiln._sweep.batches import Batch, Plan
from qec_kiln._sweep.shipped import Shipped
from qec_kiln._version import __version__

FORMAT = "qec-kiln/manifest"
FORMAT_VERSION = 1
SWEEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_sweep_name(name: str) -> str:
    """Sweep names go into bucket keys, job names and shell lines: keep them plain.

    >>> check_sweep_name("surface-2026")
    'surface-2026'
    """
    if not SWEEP_NAME_RE.match(name) or ".." in name:
        raise KilnError(
            f"--name {name!r} is not a valid sweep name; use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def manifest_key(sweep: str) -> str:
    return f"{sweep}/manifest.json"


def circuit_key(sweep: str, key: str) -> str:
    return f"{sweep}/circuits/{key}"


def decoder_object_key(sweep: str, sha256: str) -> str:
    """A shipped decoder or sampler object, by the SHA-256 of its pickle."""
    return f"{sweep}/decoders/{sha256}.pkl"


def fragment_key(sweep: str, batch: str) -> str:
    return f"{sweep}/fragments/{batch}.csv"


def log_key(sweep: str, batch: str) -> str:
    return f"{sweep}/logs/{batch}.log"


def package_versions() -> dict[str, str]:
    """Versions that change strong_ids or results: every node of a sweep must use the same."""
    from importlib import metadata as importlib_metadata  # here: merge and status never need it

    out = {"qec-kiln": __version__}
    for dist in ("stim", "sinter", "pymatching"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


@dataclasses.dataclass
class CircuitEntry:
    key: str
    sha256: str
    metadata: dict
    features: dict | None = None

    @staticmethod
    def from_json(d: dict) -> CircuitEntry:
        """Keys a later version added are ignored (so that this version reads its manifests)."""
        names = {f.name for f in dataclasses.fields(CircuitEntry)}
        return CircuitEntry(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class Manifest:
    sweep: str
    created: str
    decoders: list[str]
    max_shots: int
    max_errors: int
    circuits: list[CircuitEntry]
    plan: Plan
    inputs_digest: str
    backend: str = "local"
    custom_decoders_module_function: str | None = None
    sinter_args: list[str] = dataclasses.field(default_factory=list)
    custom_error_count_key: str | None = None  # max_errors counts custom_counts[key]
    versions: dict[str, str] = dataclasses.field(default_factory=package_versions)
    tasks: list[dict] = dataclasses.field(default_factory=list)
    #: What the plan counted as already there, per strong_id: ``{"shots", "errors", "from":
    #: {source: shots}}`` (sources: other sweeps of the bucket, --existing-data files). The
    #: shards' targets are what was left of ``max_shots``/``max_errors`` after it.
    existing: dict[str, dict] = dataclasses.field(default_factory=dict)
    #: "sweep", or "import": rows imported by --merge-existing-data (read-only, never run).
    kind: str = "sweep"
    #: Every circuit's metadata is what ``sinter collect --metadata_func auto`` reads from its
    #: file name (decided at plan time, so that run-batch need not import sinter to choose the
    #: flag); None: not recorded (an earlier version's manifest), or not every circuit's.
    metadata_from_names: bool | None = None
    #: The custom decoder/sampler objects shipped with the sweep (their names, kinds, digests
    #: and the Python that pickled them); None: none (the nodes load nothing of the sweep's).
    shipped: Shipped | None = None

    @property
    def batches(self) -> list[Batch]:
        return self.plan.batches

    def errors_of(self, stats: Any) -> int:
        """What ``max_errors`` counts in a ``sinter.TaskStats``: its errors, or with
        ``custom_error_count_key`` that custom count (as sinter collect counts it)."""
        if self.custom_error_count_key:
            return int(stats.custom_counts.get(self.custom_error_count_key, 0))
        return int(stats.errors)

    def circuit(self, key: str) -> CircuitEntry:
        for c in self.circuits:
            if c.key == key:
                return c
        raise KilnError(f"manifest of sweep {self.sweep!r} has no circuit {key!r}")

    def to_json(self) -> dict:
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sweep": self.sweep,
            "created": self.created,
            "backend": self.backend,
            "versions": self.versions,
            "inputs_digest": self.inputs_digest,
            "decoders": self.decoders,
            "custom_decoders_module_function": self.custom_decoders_module_function,
            "max_shots": self.max_shots,
            "max_errors": self.max_errors,
            "sinter_args": self.sinter_args,
            "custom_error_count_key": self.custom_error_count_key,
            "strategy": self.plan.strategy,
            "workers": self.plan.workers,
            "circuits": [dataclasses.asdict(c) for c in self.circuits],
            "tasks": self.tasks,
            "kind": self.kind,
            "existing": self.existing,
            "metadata_from_names": self.metadata_from_names,
            "batches": [b.to_json() for b in self.plan.batches],
        }
        if self.shipped:  # only then: a manifest without objects reads as before
            data["shipped_decoders"] = self.shipped.to_json()
        return data

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n").encode()

    @staticmethod
    def from_json(d: dict, where: str = "manifest") -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise KilnError(f"{where}: not a qec-kiln manifest; is the bucket or --sweep right?")
        if d.get("format_version") != FORMAT_VERSION:
            raise KilnError(
                f"{where}: manifest format {d.get('format_version')!r} was written by another "
                f"qec-kiln version (this one reads format {FORMAT_VERSION}); use qec-kiln "
                f"{d.get('versions', {}).get('qec-kiln', '?')} for this sweep or launch a new one"
            )
        try:
            plan = Plan(
                batches=[Batch.from_json(b) for b in d["batches"]],
                max_shots=d["max_shots"],
                max_errors=d["max_errors"],
                strategy=d.get("strategy", ""),
                workers=d.get("workers"),
            )
            return Manifest(
                sweep=d["sweep"],
                created=d["created"],
                decoders=list(d["decoders"]),
                max_shots=d["max_shots"],
                max_errors=d["max_errors"],
                circuits=[CircuitEntry.from_json(c) for c in d["circuits"]],
                plan=plan,
                inputs_digest=d["inputs_digest"],
                backend=d.get("backend", "local"),
                custom_decoders_module_function=d.get("custom_decoders_module_function"),
                sinter_args=list(d.get("sinter_args", [])),
                custom_error_count_key=d.get("custom_error_count_key"),
                versions=dict(d.get("versions", {})),
                tasks=list(d.get("tasks", [])),
                existing=dict(d.get("existing", {})),
                kind=d.get("kind", "sweep"),
                metadata_from_names=d.get("metadata_from_names"),
                shipped=(Shipped.from_json(d["shipped_decoders"])
                         if d.get("shipped_decoders") else None),
            )
        except (KeyError, TypeError) as ex:
            raise KilnError(
                f"{where}: manifest is incomplete or damaged ({ex!r}); relaunch the sweep"
            ) from ex


def load_manifest(bucket: Bucket, sweep: str) -> Manifest:
    """Read ``<sweep>/manifest.json`` from the bucket, with a clear error when it is missing."""
    key = manifest_key(sweep)
    where = f"{bucket.url}/{key}"
    try:
        raw = bucket.read_bytes(key)
    except ObjectNotFound:
        left = bucket.list_keys(f"{sweep}/fragments/")
        if left:
            raise KilnError(orphan_message(bucket, sweep, left)) from None
        raise KilnError(
            f"{where}: no such sweep in the bucket; check --bucket and --sweep "
            "(`qec-kiln status --bucket URL` lists the sweeps)"
        ) from None
    try:
        data = json.loads(raw)
    except ValueError as ex:
        raise KilnError(f"{where}: manifest is not valid JSON ({ex}); relaunch the sweep") from ex
    return Manifest.from_json(data, where)


def orphan_message(bucket: Bucket, sweep: str, keys: list[str]) -> str:
    """One line about a sweep folder that holds ``keys`` (fragments, leases, logs) but no
    manifest."""
    fragments = sum(1 for k in keys if _FRAGMENT_RE.match(k))
    what = f"{fragments} fragment(s)" if fragments == len(keys) else (
        f"{len(keys)} object(s) of a run ({fragments} fragment(s))")
    return (f"{bucket.url_for(sweep)} holds {what} but no manifest.json (was it deleted?): "
            "without it their rows cannot be checked against a plan; restore the manifest, or "
            f"delete {bucket.url_for(sweep)} if they are not wanted")


#: A batch's fragment: ``<sweep>/fragments/<batch>.csv``.
_FRAGMENT_RE = re.compile(r"^[^/]+/fragments/[^/]+\.csv$")


def list_sweeps(bucket: Bucket) -> list[str]:
    """Names of the sweeps in a bucket (folders holding a manifest.json)."""
    return _sweeps_and_orphans(bucket)[0]


def _sweeps_and_orphans(bucket: Bucket) -> tuple[list[str], dict[str, list[str]]]:
    """The sweeps, and the folders holding fragments but no manifest (with those fragments)."""
    keys = bucket.list_keys("")
    sweeps = sorted(k[: -len("/manifest.json")] for k in keys
                    if k.endswith("/manifest.json") and k.count("/") == 1)
    known = set(sweeps)
    orphans: dict[str, list[str]] = {}
    for k in keys:
        folder = k.partition("/")[0]
        if folder not in known and _FRAGMENT_RE.match(k):
            orphans.setdefault(folder, []).append(k)
    return sweeps, orphans


def resolve_sweep(bucket: Bucket, sweep: str | None,
                  warn: Log | None = None) -> list[str]:
    """The sweeps a command acts on: the one named, or every sweep in the bucket. A folder
    with fragments but no manifest is never one of them: ``warn`` is told of it (and an
    error names it when there is no sweep at all)."""
    if sweep:
        check_sweep_name(sweep)
        return [sweep]
    sweeps, orphans = _sweeps_and_orphans(bucket)
    lines = [orphan_message(bucket, name, keys) for name, keys in sorted(orphans.items())]
    if not sweeps:
        raise KilnError(lines[0] if lines else
                        f"{bucket.url}: no sweeps in this bucket; check --bucket, or launch one first")
    for line in lines:
        if warn is not None:
            warn(line)
    return sweeps


def inputs_digest(circuits: list[CircuitEntry], decoders: list[str], max_shots: int, max_errors: int,
                  custom: str | None, sinter_args: list[str],
                  existing_data: dict[str, str] | None = None,
                  shipped: dict[str, str] | None = None, task_targets: Any = None) -> str:
    """A digest of everything that defines the sweep's results (not of the plan).
    ``existing_data``: sha256 of each --existing-data file (with how they are used);
    ``shipped``: each shipped decoder object's identity (``_sweep.shipped.identity``), so that
    another object under the same name is another sweep; ``task_targets`` (per-task targets,
    ``Targets.task_targets``). Each enters the digest only when given, so sweeps without it
    keep their names."""
    h = hashlib.sha256()
    inputs = {
        "circuits": sorted((c.key, c.sha256) for c in circuits),
        "decoders": sorted(decoders),
        "max_shots": max_shots,
        "max_errors": max_errors,
        "custom": custom,
        "sinter_args": sinter_args,
    }
    if existing_data:
        inputs["existing_data"] = existing_data
    if shipped:
        inputs["shipped"] = shipped
    if task_targets:
        inputs["task_targets"] = {k: {d: list(t) for d, t in v.items()}
                                  for k, v in task_targets.items()}
    h.update(json.dumps(inputs, sort_keys=True).encode())
    return h.hexdigest()

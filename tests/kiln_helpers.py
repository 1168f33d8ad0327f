"""The helpers the test modules share: plain functions and constants, no fixtures (those live in
conftest.py and its fixture plugin modules). A test module imports what it needs from here, never
from another test module (tests/test_architecture.py checks that).

- the repository and its example circuits: ``REPO``, ``write_surface_circuits``;
- the CLI as a subprocess and the suite's one polling loop: ``run_kiln``, ``wait_until``;
- the stores: ``ON_CLOUDS`` (conftest's ``bucket_env`` on S3 and GCS only);
- a planned, uploaded sweep: ``make_sweep``;
- custom decoder and sampler classes of no importable module, as a notebook defines them:
  ``NOTEBOOK_CELL``, ``notebook``;
- fragments as sinter writes them, and reading them back: ``row``, ``write_fragment``,
  ``finish``, ``fragment_rows``, ``shots_per_task``, ``total_shots``, ``wait_for_uploaded_rows``,
  ``assert_sweep_merges_exactly``, ``sinter_combine``;
- processes a test started, found by a tag in their environment: ``tagged_env``,
  ``tagged_processes``, ``wait_no_tagged_processes``;
- SkyPilot's jobs controller and CLI, in-process: ``FakeController``, ``run_sky_cli``,
  ``write_launches``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable
from typing import TypeVar
from unittest import mock

import pytest
import sinter
import stim

from qec_kiln._errors import ObjectNotFound
from qec_kiln._prepare import Fleet, prepare_sweep
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.fragments import complete_lines, parse_fragment
from qec_kiln._sweep.manifest import Manifest, fragment_key
from qec_kiln._sweep.store import upload_sweep

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))  # the example generators, imported by the tests

T = TypeVar("T")

#: ``bucket_env`` (conftest.py) on the object stores only: S3 (moto) and GCS, not a local folder.
ON_CLOUDS = pytest.mark.parametrize("bucket_env", ["s3", "gcs"], indirect=True)

#: The environment variable that ``tagged_env`` sets and ``tagged_processes`` looks for.
MARKER_VAR = "QEC_KILN_TEST_TAG"


# ------------------------------------------------------------------------------------------------
# Circuits, the CLI, waiting


def write_surface_circuits(folder: pathlib.Path, distances=(3, 5), noises=(0.001, 0.01)) -> pathlib.Path:
    """The demo's circuits, small: ``d={d},p={p},b=X,type=rotated_surface_memory.stim``."""
    from generate_surface_codes import main as generate

    generate(["--out", str(folder), "-d", *map(str, distances), "-p", *map(str, noises)])
    return folder


def repetition_circuit(d: int = 3, p: float = 0.05) -> stim.Circuit:
    """A repetition-code memory circuit, ``d`` qubits, 3 rounds, depolarizing ``p`` (0: noiseless)."""
    return stim.Circuit.generated("repetition_code:memory", distance=d, rounds=3,
                                  after_clifford_depolarization=p)


def sinter_strong_id(circuit: stim.Circuit, decoder: str, metadata: object) -> str:
    """The strong_id ``sinter collect`` gives ``circuit`` with ``decoder`` and ``metadata``."""
    dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    return sinter.Task(circuit=circuit, decoder=decoder, detector_error_model=dem,
                       json_metadata=metadata).strong_id()


def run_kiln(*args: str, cwd=None, env=None, timeout=300, check=False) -> subprocess.CompletedProcess:
    """Run ``python -m qec_kiln ARGS`` as a real subprocess (real exit code and stderr)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "qec_kiln", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"qec-kiln {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def wait_until(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str], *,
               interval: float = 0.1, fail: bool = True) -> T:
    """Call ``predicate()`` every ``interval`` seconds until it returns something truthy, and
    return that. After ``timeout`` seconds fail (AssertionError) naming ``what`` (a string, or a
    function called then, for a log read at that moment) and how long it waited; with
    ``fail=False`` return the last falsy value instead, for a caller that asserts on its own.
    An exception (an ``assert`` that the process under test is still alive) ends the wait."""
    start = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        waited = time.monotonic() - start
        if waited >= timeout:
            if not fail:
                return value
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {waited:.1f} s (limit {timeout:g} s) waiting "
                                 f"for {text}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------
# A planned sweep, and its fragments


def tiny_circuits(folder: pathlib.Path, count: int) -> pathlib.Path:
    """``count`` copies of one tiny circuit (d=3 repetition code, one round), named
    ``d=3,i=K.stim``: many distinct tasks that plan and sample in no time."""
    import stim

    folder.mkdir(parents=True, exist_ok=True)
    text = str(stim.Circuit.generated("repetition_code:memory", distance=3, rounds=1,
                                      after_clifford_depolarization=0.01))
    for i in range(count):
        (folder / f"d=3,i={i}.stim").write_text(text)
    return folder


def make_sweep(circuits, bucket_url, name: str, *, max_shots: int = 4000, max_errors: int = 10**6,
               jobs: int = 2, record_bucket: bool = False) -> Manifest:
    """Plan ``circuits`` (pymatching) as sweep ``name`` and upload it to the bucket at
    ``bucket_url`` (a URL or a local path), as ``qec-kiln plan`` does; returns its manifest
    (``open_bucket(bucket_url)`` gives the bucket). ``record_bucket`` also records the bucket's
    URL in the sweep's settings, as ``--bucket`` does."""
    bucket_url = str(bucket_url)
    bucket = open_bucket(bucket_url)
    settings: dict = dict(decoders=["pymatching"], max_shots=max_shots, max_errors=max_errors,
                          name=name, jobs=jobs)
    if record_bucket:
        settings["bucket"] = bucket_url
    prepared = prepare_sweep(str(circuits), Fleet.build(settings), bucket, lambda s: None)
    upload_sweep(bucket, prepared.manifest, prepared.circuits, lambda s: None)
    return prepared.manifest


# What a user writes in a notebook cell: classes of no importable module.
NOTEBOOK_CELL = textwrap.dedent('''
    import collections

    import numpy as np
    import sinter


    class AlwaysFlip(sinter.Decoder):
        """Predicts every observable as ``value`` (1: flipped)."""

        def __init__(self, value):
            self.value = value

        def compile_decoder_for_dem(self, *, dem):
            return CompiledFlip(dem.num_observables, self.value)


    class CompiledFlip(sinter.CompiledDecoder):
        def __init__(self, num_obs, value):
            self.num_obs, self.value = num_obs, value

        def decode_shots_bit_packed(self, *, bit_packed_detection_event_data):
            shots = bit_packed_detection_event_data.shape[0]
            return np.full((shots, (self.num_obs + 7) // 8), 255 * self.value, dtype=np.uint8)


    class CountingSampler(sinter.Sampler):
        """Samples nothing: counts each shot under ``key``, no errors."""

        def __init__(self, key):
            self.key = key

        def compiled_sampler_for_task(self, task):
            return CompiledCounter(self.key)


    class CompiledCounter(sinter.CompiledSampler):
        def __init__(self, key):
            self.key = key

        def sample(self, suggested_shots):
            return sinter.AnonTaskStats(shots=suggested_shots, errors=0,
                                        custom_counts=collections.Counter({self.key: suggested_shots}))
''')


def notebook() -> types.ModuleType:
    """A fresh ``__main__``-named namespace holding the cell's classes (as a notebook's): on a
    noiseless circuit ``AlwaysFlip(1)`` makes every shot an error and ``AlwaysFlip(0)`` none,
    and ``CountingSampler(key)`` counts each shot under ``key`` with no error."""
    cell = types.ModuleType("__main__")
    exec(compile(NOTEBOOK_CELL, "<notebook cell>", "exec"), cell.__dict__)  # noqa: S102
    return cell


def row(manifest: Manifest, strong_id: str, shots: int, errors: int = 0) -> str:
    """One sinter CSV line for a planned task of ``manifest`` (sinter's own formatting)."""
    shard = next(s for b in manifest.batches for s in b.shards if s.strong_id == strong_id)
    return sinter.TaskStats(strong_id=strong_id, decoder=shard.decoder, shots=shots, errors=errors,
                            json_metadata=manifest.circuit(shard.circuit).metadata,
                            seconds=shots * 1e-6).to_csv_line()


def write_fragment(bucket_url, manifest: Manifest, batch: str, lines: list[str]) -> None:
    """Batch ``batch``'s fragment: sinter's header and ``lines``."""
    text = sinter.CSV_HEADER + "\n" + "".join(line + "\n" for line in lines)
    open_bucket(str(bucket_url)).write_bytes(fragment_key(manifest.sweep, batch), text.encode())


def finish(bucket_url, manifest: Manifest, shots_of=None) -> None:
    """Every batch's fragment with each planned shard at ``shots_of(shard)`` (default: its
    max_shots), in two rows, as sinter writes them."""
    for b in manifest.batches:
        lines = []
        for s in b.shards:
            n = s.max_shots if shots_of is None else shots_of(s)
            lines += [row(manifest, s.strong_id, n // 2, 1), row(manifest, s.strong_id, n - n // 2, 2)]
        write_fragment(bucket_url, manifest, b.id, lines)


#: A circuit name that is also markup: the pages must show it as text.
HOSTILE = "d=5,note=<script>alert(2)<"


def half(bucket, m, batch_index=0, frac=0.5):
    """The batch's fragment with each shard at ``frac`` of its max_shots (a few errors each)."""
    b = m.batches[batch_index]
    write_fragment(bucket, m, b.id, [row(m, s.strong_id, int(s.max_shots * frac), 3 + i)
                                     for i, s in enumerate(b.shards)])


def fragment_rows(fragment: pathlib.Path | bytes) -> list[sinter.TaskStats]:
    """Every complete row of a fragment, one TaskStats per row (not combined)."""
    data = fragment if isinstance(fragment, bytes) else fragment.read_bytes()
    rows = complete_lines(data).decode().splitlines()[1:]
    return [sinter.read_stats_from_csv_files(io.StringIO(f"{sinter.CSV_HEADER}\n{r}\n"))[0]
            for r in rows]


def shots_per_task(*fragments: pathlib.Path | bytes) -> dict[str, int]:
    """Shots per strong_id over the complete rows of ``fragments`` (what merge would sum)."""
    totals: dict[str, int] = {}
    for fragment in fragments:
        for task_row in fragment_rows(fragment):
            totals[task_row.strong_id] = totals.get(task_row.strong_id, 0) + task_row.shots
    return totals


def total_shots(data: bytes) -> int:
    """All shots of a fragment's (or resume file's) rows, as qec-kiln parses it."""
    return sum(s.shots for s in parse_fragment(data, "fragment").stats.values())


def wait_for_uploaded_rows(bucket, key: str, rows: int, timeout: float) -> bytes:
    """Poll the bucket's ``key`` until it holds ``rows`` complete rows or ``timeout`` seconds
    pass; returns what it last read (``b""`` while the object does not exist), so the caller
    asserts on the rows itself (``wait_until(..., fail=False)``)."""
    last = [b""]

    def enough() -> bool:
        with contextlib.suppress(ObjectNotFound):
            last[0] = bucket.read_bytes(key)
        return len(fragment_rows(last[0])) >= rows

    wait_until(enough, timeout, f"{rows} rows in {key}", interval=0.2, fail=False)
    return last[0]


def assert_sweep_merges_exactly(url: str, sweep: str, batch_ids: list[str], *, tasks: int,
                                shots_each: int, out: pathlib.Path) -> None:
    """``tasks`` tasks of ``sweep``, each at exactly ``shots_each`` shots over its batches'
    fragments, and ``qec-kiln merge`` of the bucket gives ``tasks * shots_each`` in all."""
    from qec_kiln._command import _main as _cli

    bucket = open_bucket(url)
    totals = shots_per_task(*(bucket.read_bytes(f"{sweep}/fragments/{b}.csv") for b in batch_ids))
    assert sorted(totals.values()) == [shots_each] * tasks
    assert _cli.main(["merge", "--bucket", url, "--out", str(out)]) == 0
    assert sum(s.shots for s in sinter.read_stats_from_csv_files(str(out))) == tasks * shots_each


def sinter_combine(*paths) -> bytes:
    """What ``sinter combine PATHS`` prints."""
    exe = pathlib.Path(sys.executable).with_name("sinter")
    return subprocess.run([str(exe), "combine", *map(str, paths)], check=True,
                          capture_output=True).stdout


# ------------------------------------------------------------------------------------------------
# Processes a test started


def tagged_env(tag: str, **extra: str) -> dict[str, str]:
    """The test's environment plus a marker that every process started from it inherits."""
    return {**os.environ, MARKER_VAR: tag, **extra}


def tagged_processes(tag: str) -> list[str]:
    """Live processes carrying ``MARKER_VAR=tag`` in their environment."""
    needle = f"{MARKER_VAR}={tag}".encode()
    found = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle not in (d / "environ").read_bytes():
                continue
            stat = (d / "stat").read_text()
            if stat[stat.rindex(")") + 2:].startswith(("Z", "X")):
                continue
            found.append(f"{d.name}: " + (d / "cmdline").read_bytes().replace(b"\0", b" ")
                         .decode(errors="replace")[:150])
        except OSError:
            continue
    return found


def wait_no_tagged_processes(tag: str, timeout: float = 10.0) -> list[str]:
    """Until no process carries ``tag`` or ``timeout`` seconds pass; returns those still alive
    (the caller asserts on them: ``wait_until(..., fail=False)``)."""
    left: list[str] = []

    def gone() -> bool:
        left[:] = tagged_processes(tag)
        return not left

    wait_until(gone, timeout, f"the processes tagged {tag} to exit", interval=0.2, fail=False)
    return left


# ------------------------------------------------------------------------------------------------
# SkyPilot's jobs controller and CLI, in-process (SkyPilot imported only when a test uses them)


def run_sky_cli(args, **patches):
    """SkyPilot's real click CLI, in-process, with the named server calls replaced."""
    from click.testing import CliRunner
    from sky.client.cli import command

    targets = {"command": command, "managed_jobs": command.managed_jobs, "sdk": command.sdk,
               "cli_utils": command.cli_utils}
    with contextlib.ExitStack() as stack:
        for where, attrs in patches.items():
            stack.enter_context(mock.patch.multiple(targets[where], **attrs))
        res = CliRunner().invoke(command.cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    return res


class FakeController:
    """SkyPilot's jobs controller as the SDK sees it: only the final SDK calls
    (``sky.jobs.queue_v2``, ``sky.jobs.cancel``, ``sky.get``) are replaced. Queue answers are
    server-format dicts decoded by SkyPilot's own decoder into its typed ``ManagedJobRecord``s;
    a cancel marks jobs CANCELLING like SkyPilot's ``cancel_jobs_by_id`` (terminal ones skipped)
    after ``cancel_lag`` further queue reads (the controller acts on the signal later)."""

    def __init__(self, monkeypatch, rows, *, cancel_lag=0, cancels=True):
        import sky
        from sky.jobs import constants

        from qec_kiln._backends.skypilot import backend as sp

        self.rows, self.cancel_lag, self.cancels = [dict(r) for r in rows], cancel_lag, cancels
        self.calls: list[tuple[str, dict]] = []
        self.pending: list[int] = []
        self.defaults = constants.DEFAULT_MANAGED_JOB_FIELDS
        self.other_get = sky.get  # requests that are not ours (e.g. a faked pool SDK's) go there
        monkeypatch.setattr(sky.jobs, "queue_v2", self.queue_v2)
        monkeypatch.setattr(sky.jobs, "cancel", self.cancel)
        monkeypatch.setattr(sky, "get", self.get)
        # The stop request goes to the bucket (tests/test_stop_request.py), not to SkyPilot.
        monkeypatch.setattr(sp.SkyPilotBackend, "ask_to_stop",
                            lambda _b, url, sweep, ids: self.calls.append(("stop", ids)) or ids)

    def queue_v2(self, refresh, **kw):
        self.calls.append(("queue_v2", dict(kw, refresh=refresh)))
        return ("queue", kw.get("fields"))

    def cancel(self, **kw):
        self.calls.append(("cancel", kw))
        return ("cancel", kw)

    def get(self, rid):
        from sky.jobs import state
        from sky.server.requests.serializers import decoders

        if not (isinstance(rid, tuple) and len(rid) == 2 and rid[0] in ("queue", "cancel")):
            return self.other_get(rid)
        what, arg = rid
        if what == "cancel":
            if self.cancels:
                self.pending = [int(i) for i in arg["job_ids"]]
            return None
        if self.pending and self.cancel_lag > 0:
            self.cancel_lag -= 1
        elif self.pending:
            for row in self.rows:
                if row["job_id"] in self.pending and \
                        not state.ManagedJobStatus(row["status"]).is_terminal():
                    row["status"] = "CANCELLING"
            self.pending = []
        jobs = []
        for row in self.rows:
            full = dict.fromkeys(arg)  # the server returns the fields asked for
            full.update(task_id=0, workspace="default", resources="1x[CPU:16+]",
                        job_duration=30.0, recovery_count=0, submitted_at=1.7e9)
            full.update({k: v for k, v in row.items() if k in arg})
            full["task_name"] = full["job_name"] = row["job_name"]
            full["job_id"], full["status"] = row["job_id"], row["status"]
            jobs.append(full)
        return decoders.decode_jobs_queue_v2(
            {"jobs": jobs, "total": len(jobs), "total_no_filter": len(jobs), "status_counts": {}})


def write_launches(sweep, records):
    """The SkyPilot backend's record of the launches of ``sweep`` (``launches.json``)."""
    from qec_kiln._backends.skypilot import backend as sp

    d = sp.state_dir(sweep)
    d.mkdir(parents=True, exist_ok=True)
    (d / "launches.json").write_text(json.dumps(records))

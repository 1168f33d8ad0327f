"""The Python API (qec_kiln.plan/launch/status/merge/cancel): the CLI parses and calls the API,
backends answer their own questions, and importing the package or running a batch loads only what
it needs. (Which module may import which: test_architecture.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

import qec_kiln
from qec_kiln._backends import BACKENDS, backend_class, get_backend
from qec_kiln._command._main import parse_args
from qec_kiln._planning._cost import TaskCost
from qec_kiln._planning.plan import plan_sweep
from qec_kiln._sweep.spec import Partition, Targets


def test_run_batch_reaches_sinter_without_importing_sinter_a_backend_or_rich(tmp_path,
                                                                            small_circuits):
    """A node's run-batch (``qec-kiln run-batch`` through ``_command._main.main``) parses its flags,
    takes its lease, reads the manifest and picks sinter's --metadata_func (recorded at plan
    time) without importing sinter, numpy, stim, a backend or rich: the sinter it starts
    imports them once. (The subprocess stops at the moment it would start sinter.)"""
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.store import upload_sweep

    bucket = tmp_path / "b"
    plan = qec_kiln.plan(small_circuits, max_shots=100, bucket=str(bucket), name="s")
    assert plan.manifest.metadata_from_names
    upload_sweep(open_bucket(str(bucket)), plan.manifest, plan.circuits, lambda s: None)
    code = (
        "import json, os, sys\n"
        "from qec_kiln._command import _main as _cli\n"
        "from qec_kiln._node import runner\n"
        "def at_sinter(argv, **kw):\n"
        "    print(json.dumps([argv[argv.index('--metadata_func') + 1], sorted(\n"
        "        n for n in sys.modules if n.split('.')[0] in ('sinter', 'numpy', 'stim', 'rich')\n"
        "        or n.startswith(('qec_kiln._backends', 'qec_kiln._view',\n"
        "                         'qec_kiln._command._main_status', 'qec_kiln._command._main_launch')))]),\n"
        "        flush=True)\n"
        "    os._exit(0)\n"
        "runner.subprocess.Popen = at_sinter\n"
        f"_cli.main(['run-batch', '--bucket', {str(bucket)!r}, '--sweep', 's', "
        "'--batch', 'b000'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, QEC_KILN_WORK_DIR=str(tmp_path / "work")))
    assert r.stdout and json.loads(r.stdout.splitlines()[-1]) == ["auto", []], r.stderr
    # A manifest that did not record it (an earlier version's) is checked by sinter's parser.
    from qec_kiln._node.sinter_cmd import metadata_func as _metadata_func
    from qec_kiln._sweep.manifest import Manifest

    keys = [c.key for c in plan.manifest.circuits]
    old = json.loads(plan.manifest.dumps())
    del old["metadata_from_names"]
    assert _metadata_func(Manifest.from_json(old), [tmp_path / k for k in keys], keys) == "auto"


def test_import_is_fast_and_loads_neither_sinter_nor_skypilot():
    code = ("import sys, qec_kiln; qec_kiln.launch, qec_kiln.plan, qec_kiln.LaunchResult; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sinter', 'sky', 'stim', 'boto3', 'rich'))))")
    r = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                       text=True, check=True)
    assert json.loads(r.stdout) == []
    assert qec_kiln.MergeReport.__name__ == "MergeReport"  # the lazy names resolve
    assert qec_kiln.StatusReport.__name__ == "StatusReport"


@pytest.mark.parametrize("name", list(BACKENDS))
def test_each_backend_builds_its_own_options_from_the_cli_flags(name):
    args = parse_args(
        ["launch", "c/", "--backend", name, "--processes", "3", "--cpus", "8", "--sync-seconds",
         "5", "--parallel", "2", "--infra", "aws", "--no-spot", "--partition", "p",
         "--sbatch-option=--qos=long"])
    opts = backend_class(name).options_from_args(args)
    assert type(opts) is backend_class(name).options_type
    assert (opts.processes, opts.cpus, opts.sync_seconds) == (3, "8", 5.0)
    own = {"local": {"workers": 2}, "skypilot": {"infra": "aws", "use_spot": False},
           "slurm": {"partition": "p", "extra_sbatch": ("--qos=long",)}}[name]
    assert {k: getattr(opts, k) for k in own} == own


def test_backends_answer_their_own_planning_questions():
    local, sky, slurm = (get_backend(n) for n in ("local", "skypilot", "slurm"))
    assert (local.startup_seconds, slurm.startup_seconds, sky.startup_seconds) == (2, 30, 360)
    assert local.decoders_run_here and not sky.decoders_run_here
    assert sky.capacity(sky.options()).at(1).processes == 16
    assert slurm.capacity(slurm.options({"cpus": "16+"})).at(1).processes == 16
    assert local.capacity(local.options()).at(1).surely_processes == len(os.sched_getaffinity(0))
    assert slurm.capacity(slurm.options()).at(7).slots == 7
    assert local.capacity(local.options({"parallel": 2})).at(7).slots == 2
    # 24 core-hours on 16 processes is 5400 s of wall; each batch keeps >= 4x its 360 s start-up.
    tasks = [TaskCost(f"c{i}", "pymatching", f"id{i}", 3600.0 / 1000, 1.0) for i in range(24)]
    plan = plan_sweep(tasks, Targets(max_shots=1000, max_errors=10**9), Partition(),
                      sky.capacity(sky.options()))
    assert len(plan.batches) == 3
    assert sky.bucket_problem("results/") and sky.bucket_problem("s3://b") is None
    assert slurm.bucket_problem("results/") is None


def test_unknown_backend_option_is_one_clear_line():
    with pytest.raises(qec_kiln.KilnError, match="'partition' is not one of the local"):
        get_backend("local").options({"partition": "x"})


def test_the_cli_plan_is_the_api_plan(tmp_path, small_circuits, kiln):
    flags = ["--max-shots", "50_000", "--max-errors", "100", "--jobs", "2", "--bucket",
             str(tmp_path / "b"), "--name", "same", "--price-per-cpu-hour", "0.05"]
    r = kiln("plan", str(small_circuits), *flags, "--json", check=True)
    api = qec_kiln.plan(small_circuits, max_shots=50_000, max_errors=100, jobs=2,
                        bucket=tmp_path / "b", name="same", price_per_cpu_hour=0.05)
    assert json.loads(r.stdout) == json.loads(json.dumps(api.to_json()))
    assert api.estimated_cost is not None and len(api.batches) == 2


def test_the_api_warns_when_a_stored_plan_ignores_its_settings(tmp_path, small_circuits):
    from qec_kiln._prepare import Fleet, prepare_sweep
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.store import upload_sweep

    kw = dict(max_shots=50_000, max_errors=100, bucket=tmp_path / "b", name="kept")
    bucket = open_bucket(str(tmp_path / "b"))
    stored = prepare_sweep(str(small_circuits), Fleet.build(dict(
        decoders=["pymatching"], max_shots=50_000, max_errors=100, name="kept", jobs=3)),
        bucket, lambda s: None)
    assert upload_sweep(bucket, stored.manifest, stored.circuits, lambda s: None) is stored.manifest
    assert len(stored.batches) == 3
    with pytest.warns(qec_kiln.KilnWarning,
                      match=r"--jobs 2 ignored: sweep 'kept' keeps its stored plan") as said_:
        again = qec_kiln.plan(small_circuits, jobs=2, **kw)
    assert again.exists and len(again.batches) == 3
    assert said_[0].filename == __file__  # attributed to the caller's line, not to qec_kiln
    said: list[str] = []  # with a log, the line goes there instead
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qec_kiln.plan(small_circuits, jobs=2, log=said.append, **kw)
    assert any(line.startswith("warning: --jobs 2 ignored") for line in said), said


@pytest.mark.slow
def test_launch_dry_run_starts_nothing_and_describes_the_jobs(tmp_path, small_circuits):
    bucket = tmp_path / "b"
    r = qec_kiln.launch(small_circuits, bucket=bucket, backend="skypilot", dry_run=True,
                        backend_options={"infra": "k8s"}, max_shots=1000, jobs=2)
    assert r.dry_run and r.launched == [] and not bucket.exists()
    assert "sky jobs launch" in r.dry_run.description and "use_spot set to false" in r.dry_run.description
    with pytest.raises(qec_kiln.KilnError, match="SkyPilot's nodes cannot see"):
        qec_kiln.launch(small_circuits, bucket=bucket, backend="skypilot", max_shots=1000)


def test_the_lazy_package_lists_its_api_and_refuses_unknown_names():
    assert {"plan", "launch", "status", "merge", "cancel", "KilnError", "KilnWarning"} <= set(
        dir(qec_kiln))
    with pytest.raises(AttributeError, match="no attribute 'lanch'"):
        qec_kiln.lanch  # noqa: B018 - a typo is an AttributeError, not a lazy import

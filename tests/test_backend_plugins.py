"""Backends as plug-ins: each backend's flags come from its options' fields, prefixed with its
name so that no two backends' flags can clash (today's spellings kept as aliases while nothing
else has them), and a backend in a package of its own is found through the entry-point group
``qec_kiln.backends`` and used by the real ``qec-kiln`` with its own flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest
from kiln_helpers import REPO

from qec_kiln._backends import BACKENDS, BackendOptions, add_arguments, option, pool_backend
from qec_kiln._backends.options import add_own_flags, common_flags, own_flags
from qec_kiln._command._base import normalise
from qec_kiln._command._main import parse_args, verb_module

FAKE_PKG = REPO / "tests" / "fake_backend_pkg"


def _twins(names: tuple[str, ...]) -> set[str]:
    """A flag's spellings with the ``--a_b`` twin qec-kiln's parser takes for each ``--a-b``."""
    return set(names) | {"--" + n[2:].replace("-", "_") for n in names}


def test_no_two_backends_share_a_flag_aliases_included():
    assert {"local", "skypilot", "slurm"} <= set(BACKENDS)
    common = set().union(*(_twins(s.names) for s in common_flags()))
    seen: dict[str, str] = {}
    for name, plugin in BACKENDS.items():
        for spec in own_flags(name, plugin.options_type):
            if spec.field not in {f.name for f in dataclasses.fields(BackendOptions)}:
                assert spec.names[0].startswith(f"--{name}-") and spec.dest.startswith(f"{name}_")
            for flag in _twins(spec.names):
                assert flag not in common, (name, flag)
                assert seen.setdefault(flag, name) == name, (flag, seen[flag], name)


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_every_backend_flag_and_alias_reaches_its_own_backend(command):
    """In the real parsers: each spelling (prefixed, alias, underscore twin) is its backend's."""
    table = verb_module(command).parser()._option_string_actions
    for name, plugin in BACKENDS.items():
        for spec in own_flags(name, plugin.options_type):
            spelt = {normalise([f], set(table))[0] for f in _twins(spec.names)}
            assert {table[f].dest for f in spelt} == {spec.dest}, spec


def test_the_old_and_the_prefixed_spellings_give_the_same_options():
    from qec_kiln._backends import backend_class

    old = ["--infra", "aws", "--no-spot", "--yaml", "j.yaml", "--image", "docker:x", "--pool",
           "p", "--keep-pool", "--kiln-pip-spec", "qec-kiln==0.1.0", "--partition", "long",
           "--account", "a", "--time", "01:00:00", "--sbatch-template", "t.sbatch",
           "--sbatch-option=--qos=long", "--parallel", "2"]
    new = ["--skypilot-infra", "aws", "--skypilot-no-spot", "--skypilot-yaml", "j.yaml",
           "--skypilot-image", "docker:x", "--skypilot-pool", "p", "--skypilot-keep-pool",
           "--skypilot-kiln-pip-spec", "qec-kiln==0.1.0", "--slurm-partition", "long",
           "--slurm-account", "a", "--slurm-time", "01:00:00", "--slurm-sbatch-template",
           "t.sbatch", "--slurm-sbatch-option=--qos=long", "--workers", "2"]
    for name in ("local", "skypilot", "slurm"):
        cls = backend_class(name)
        a, b = (cls.options_from_args(parse_args(["launch", "c/", *words]))
                for words in (old, new))
        assert a == b
    sky = backend_class("skypilot").options_from_args(
        parse_args(["launch", "c/", *old]))
    assert (sky.infra, sky.use_spot, sky.yaml_path, sky.image, sky.pool, sky.keep_pool,
            sky.workers) == ("aws", False, "j.yaml", "docker:x", "p", True, 2)
    slurm = backend_class("slurm").options_from_args(
        parse_args(["launch", "c/", *new]))
    assert (slurm.partition, slurm.account, slurm.time_limit, slurm.sbatch_template,
            slurm.extra_sbatch) == ("long", "a", "01:00:00", "t.sbatch", ("--qos=long",))


def test_an_alias_another_flag_has_is_left_out_and_every_command_still_parses(capsys):
    @dataclasses.dataclass(frozen=True)
    class ClashOptions(BackendOptions):
        image: str | None = option(aliases=("--image",), help="clashes with skypilot's alias")
        jobs: str | None = option(aliases=("--jobs",), help="clashes with a sweep flag")

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int)
    add_arguments(parser)
    add_own_flags(parser, "clash", ClashOptions)
    args = parser.parse_args(["--image", "docker:a", "--clash-image", "docker:b", "--jobs", "3",
                              "--clash-jobs", "j"])
    assert (args.skypilot_image, args.clash_image, args.jobs, args.clash_jobs) == (
        "docker:a", "docker:b", 3, "j")
    assert capsys.readouterr().err == ""


def test_the_pool_verb_asks_the_backend_with_pools_and_names_none():
    assert pool_backend(None).has_pools()
    assert [n for n in BACKENDS if pool_backend(n).has_pools()] == [pool_backend(None).name]


def _fake_installed(tmp_path: pathlib.Path) -> dict[str, str]:
    """The environment of a process in which the fake backend is installed: its package and a
    ``.dist-info`` naming it in the entry-point group, on PYTHONPATH."""
    dist = tmp_path / "site" / "kiln_fake_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kiln-fake-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[qec_kiln.backends]\nfake = kiln_fake_backend:PLUGIN\n")
    path = os.pathsep.join([str(dist.parent), str(FAKE_PKG), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path.rstrip(os.pathsep),
                FAKE_BACKEND_LOG=str(tmp_path / "fake.log"))


def test_a_backend_package_is_found_through_its_entry_point(tmp_path):
    code = ("import json\n"
            "from qec_kiln._backends import BACKENDS\n"
            "from qec_kiln._node.stop import run_id_from\n"
            "print(json.dumps([list(BACKENDS), BACKENDS.problems,\n"
            "    run_id_from({'FAKE_JOB_ID': '42'}), run_id_from({'SKYPILOT_MANAGED_JOB_ID': '7'}),\n"
            "    run_id_from({})]))\n")
    r = subprocess.run([sys.executable, "-c", code], env=_fake_installed(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names, problems, fake_id, sky_id, none = json.loads(r.stdout)
    assert names[:3] == ["local", "skypilot", "slurm"] and "fake" in names
    assert (problems, fake_id, sky_id, none) == ({}, "42", "7", None)


def _qec_kiln() -> list[str]:
    """The real command: the venv's ``qec-kiln`` script (else ``python -m qec_kiln``)."""
    script = pathlib.Path(sys.executable).parent / "qec-kiln"
    return [str(script)] if script.exists() else [sys.executable, "-m", "qec_kiln"]


@pytest.mark.slow
def test_plan_and_launch_with_a_backend_of_its_own_package_and_its_own_flags(tmp_path,
                                                                            small_circuits):
    env = _fake_installed(tmp_path)
    bucket = str(tmp_path / "bucket")

    def kiln(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_qec_kiln(), *words], env=env, capture_output=True, text=True,
                              timeout=300)

    r = kiln("plan", str(small_circuits), "--backend", "fake", "--fake-zone", "z9",
             "--bucket", bucket, "--jobs", "2", "--max-shots", "100", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["batches"]) == 2
    r = kiln("launch", str(small_circuits), "--backend", "fake", "--fake-zone", "z9",
             "--fake-image", "docker:f", "--image", "docker:sky", "--bucket", bucket, "--jobs",
             "2", "--max-shots", "100", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "fake: 2 batch(es) in zone z9 image docker:f" in r.stdout
    r = kiln("launch", str(small_circuits), "--backend", "fake", "--fake-zone", "z9",
             "--bucket", bucket, "--jobs", "2", "--max-shots", "100")
    assert r.returncode == 0, r.stderr
    [line] = pathlib.Path(env["FAKE_BACKEND_LOG"]).read_text().splitlines()
    assert json.loads(line) == {"zone": "z9", "image": None, "batches": ["b000", "b001"]}
    r = kiln("launch", str(small_circuits), "--fake-zone", "z9", "--jobs", "2", "--dry-run",
             "--bucket", bucket)  # another backend: the fake's flags parse and are not its own
    assert r.returncode == 0, r.stderr
    r = kiln("pool", "status", "--backend", "fake")
    assert r.returncode == 2 and "the fake backend has no pools" in r.stderr

"""SkyPilot backend: YAML rendering and offline validation, the launch request, queue parsing.

No cloud, credentials, internet or API server is needed. Where SkyPilot's own code can run
offline it does: its schema and task loader validate every rendered YAML, its real ``jobs launch``
/ ``jobs queue`` / ``jobs cancel`` click commands parse our exact argv in-process (only the calls
that would reach the API server are replaced), and the installed ``sky`` executable is run once
per command with ``--help`` to check each flag we pass.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kiln_helpers import REPO, FakeController, make_sweep, write_launches

from qec_kiln._backends import LaunchRequest, get_backend
from qec_kiln._backends.skypilot import backend as sp
from qec_kiln._backends.skypilot import sdk
from qec_kiln._backends.skypilot.parse import parse_job_ids
from qec_kiln._errors import KilnError

CONFIGS = ("sinter_job.yaml", "sinter_job_gpu.yaml")
PLANTED = {
    "AWS_SECRET_ACCESS_KEY": "planted-secret-123",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED0000KEY",
    "AWS_SESSION_TOKEN": "planted-session-token-456",
    "GOOGLE_OAUTH_ACCESS_TOKEN": "planted-google-token-789",
}
HOSTILE_BUCKET = "s3://my-bucket/pre fix/$(touch /tmp/pwned)'\"`;|&*?~"
HOSTILE_SWEEP = "d3 to d13; rm -rf ~ ${HOME}"


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    """State dir in tmp; planted credentials in the environment; no usage reporting."""
    monkeypatch.setenv("QEC_KILN_HOME", str(tmp_path / "kiln-home"))
    monkeypatch.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    for key, value in PLANTED.items():
        monkeypatch.setenv(key, value)


def request(batches=("b000", "b003", "b007"), bucket="s3://bkt/sweeps", sweep="surface-d3",
            **opts) -> LaunchRequest:
    return LaunchRequest(bucket, sweep, tuple(batches), sp.SkyPilotOptions(**opts),
                         num_batches_total=8, kiln_version="0.1.0")


def capture_sdk_launch(monkeypatch, ids=(11, 12, 13)):
    """Replace only SkyPilot's final SDK calls (``sky.jobs.launch``, ``sky.stream_and_get``);
    the returned dict receives the task, name and num_jobs they were given."""
    import sky

    seen: dict = {}

    def launch(task, name=None, num_jobs=None, **kw):
        seen.update(task=task, name=name, num_jobs=num_jobs, kw=kw)
        return "request-id"

    monkeypatch.setattr(sky.jobs, "launch", launch)
    monkeypatch.setattr(sky, "stream_and_get",
                        lambda rid, **kw: (list(ids)[: seen["num_jobs"]], None))
    return seen


def sky_validate(yaml_text: str, env_overrides):
    """Validate like SkyPilot does for `sky jobs launch job.yaml --env ...`; return the Task."""
    import sky
    from sky.utils import common_utils, schemas

    cfg = yaml.safe_load(yaml_text)
    common_utils.validate_schema(dict(cfg), schemas.get_task_schema(), "invalid: ")
    return sky.Task.from_yaml_config(cfg, env_overrides=list(env_overrides))


def assert_no_planted(*texts: str) -> None:
    for text in texts:
        for key, value in PLANTED.items():
            assert value not in text, f"value of {key} leaked"


def secrets_yaml(tmp_path: Path, names=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                 gpu: bool = False) -> Path:
    """The packaged YAML with its commented secrets block switched on for ``names``."""
    text = sp.packaged_yaml_text("sinter_job_gpu.yaml" if gpu else "sinter_job.yaml")
    text = text.replace("# secrets:\n", "secrets:\n")
    for name in names:
        if f"#   {name}: null" in text:
            text = text.replace(f"#   {name}: null", f"  {name}: null")
        else:
            text = text.replace("secrets:\n", f"secrets:\n  {name}: null\n")
    path = tmp_path / "with secrets.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the shipped configs


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_are_valid_skypilot_tasks(name):
    text = (REPO / "configs" / name).read_text()
    cfg = yaml.safe_load(text)
    # Required values are null (given at launch); no secrets block by default, because SkyPilot
    # 0.14.1 refuses to launch a null secret that was not passed with --secret.
    assert {k for k, v in cfg["envs"].items() if v is None} == {
        "KILN_BUCKET", "KILN_SWEEP", "KILN_BATCHES", "KILN_VERSION", "KILN_NODE_REQUIREMENTS"}
    assert "secrets" not in cfg
    res = cfg["resources"]
    assert res["use_spot"] is True
    # Only exit 75 (final upload failed) is retried; config errors (2), conflicts (3) and
    # failed setups are not.
    assert res["job_recovery"] == {"strategy": "EAGER_NEXT_REGION", "max_restarts_on_errors": 0,
                                   "recover_on_exit_codes": [75]}
    setup = " ".join(cfg["setup"].replace("\\\n", " ").split())
    assert "--no-deps \"$kiln\"" in setup and "$KILN_NODE_REQUIREMENTS" in setup
    assert 'py="python${KILN_PYTHON:-3}"' in setup and '"$py" -m venv "$venv"' in setup
    run = " ".join(cfg["run"].replace("\\\n", " ").split())
    assert ('exec "$kiln" run-batch --bucket "$KILN_BUCKET" --sweep "$KILN_SWEEP" --batches '
            '"$KILN_BATCHES" --index "$SKYPILOT_JOB_RANK" --sync-seconds "$KILN_SYNC_SECONDS" '
            '--processes "${KILN_PROCESSES:-$(nproc)}"') in run
    filled = [("KILN_BUCKET", "s3://b"), ("KILN_SWEEP", "s"), ("KILN_BATCHES", "b000"),
              ("KILN_VERSION", "0.1.0"), ("KILN_NODE_REQUIREMENTS", "stim==1.16.0")]
    task = sky_validate(text, filled)
    (first, *_) = task.resources
    assert first.use_spot and str(first.cpus).endswith("+")
    if name == "sinter_job.yaml":
        assert res["cpus"] == "16+"
    else:
        assert {next(iter(r.accelerators)) for r in task.resources} == {"H100", "A100"}
        assert "KILN_SAMPLER" in cfg["envs"]
    # Without the required values SkyPilot itself refuses it (the nulls are real requirements).
    with pytest.raises(ValueError, match="KILN_BUCKET"):
        sky_validate(text, [])


def test_get_backend_and_state_dir(tmp_path):
    backend = get_backend("skypilot")
    assert isinstance(backend, sp.SkyPilotBackend) and backend.name == "skypilot"
    assert sp.state_dir("surface-d3") == tmp_path / "kiln-home" / "skypilot" / "surface-d3"


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("opts", "expect_file", "expect"),
    [
        ({}, "sinter_job.yaml", {"cpus": "16+", "use_spot": True}),
        ({"cpus": "32+"}, "sinter_job.yaml", {"cpus": "32+", "use_spot": True}),
        ({"use_spot": False}, "sinter_job.yaml", {"use_spot": False}),
        ({"infra": "aws/us-east-1", "cpus": "8"}, "sinter_job.yaml",
         {"infra": "aws/us-east-1", "cpus": "8", "use_spot": True}),
        ({"infra": "k8s"}, "sinter_job.yaml", {"infra": "k8s", "use_spot": False}),
        ({"gpus": "H100:1"}, "sinter_job_gpu.yaml",
         {"accelerators": "H100:1", "cpus": "8+", "use_spot": True}),
        ({"gpus": "H100:1,A100:2", "infra": "gcp"}, "sinter_job_gpu.yaml",
         {"accelerators": {"H100": 1, "A100": 2}, "infra": "gcp"}),
        ({"processes": 4, "sync_seconds": 12.5}, "sinter_job.yaml", {"cpus": "16+"}),
    ],
)
@pytest.mark.slow
def test_render_option_combinations(opts, expect_file, expect, tmp_path):
    backend = sp.SkyPilotBackend()
    if opts.get("infra", "aws").split("/")[0] != "aws":  # nodes there need the keys as secrets
        opts = dict(opts, yaml_path=str(secrets_yaml(
            tmp_path, names=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))))
        if "gpus" in opts:
            opts["yaml_path"] = str(secrets_yaml(tmp_path, ("AWS_ACCESS_KEY_ID",
                                                            "AWS_SECRET_ACCESS_KEY"), gpu=True))
    req = request(bucket=HOSTILE_BUCKET, sweep=HOSTILE_SWEEP, **opts)
    rendered = backend.render(req)
    yaml_text, env, argv = rendered.yaml_text, rendered.env_overrides, rendered.launch_argv
    cfg = yaml.safe_load(yaml_text)
    for key, value in expect.items():
        assert cfg["resources"][key] == value, key
    packaged = yaml.safe_load(sp.packaged_yaml_text(expect_file))
    assert cfg["run"] == packaged["run"] and cfg["setup"] == packaged["setup"]
    # The rendered YAML is the exact task: every env filled, the wheel mounted.
    assert {k: v for k, v in cfg["envs"].items() if v is None} == {}
    assert cfg["envs"]["KILN_WHEEL"] in cfg["file_mounts"]
    assert Path(cfg["file_mounts"][cfg["envs"]["KILN_WHEEL"]]).is_file()

    envd = dict(env)
    assert envd["KILN_BUCKET"] == HOSTILE_BUCKET and envd["KILN_SWEEP"] == HOSTILE_SWEEP
    assert envd["KILN_BATCHES"] == "b000,b003,b007" and envd["KILN_VERSION"] == "0.1.0"
    assert envd["KILN_SYNC_SECONDS"] == f"{req.options.sync_seconds:g}"
    assert envd.get("KILN_PROCESSES") == (str(opts["processes"]) if "processes" in opts else None)
    # Hostile values are YAML strings (never shell text) and come back unchanged.
    assert cfg["envs"]["KILN_BUCKET"] == HOSTILE_BUCKET

    name = argv[argv.index("--name") + 1]
    assert argv[:5] == ["sky", "jobs", "launch", "--yes", "--detach-run"]
    assert argv[argv.index("--num-jobs") + 1] == "3"
    assert name == sp.job_name(HOSTILE_SWEEP) and name.startswith("kiln-d3-to-d13")
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert pairs == [f"{k}={v}" for k, v in env]
    assert argv[-1] == str(sp.state_dir(HOSTILE_SWEEP) / "job.yaml")

    task = sky_validate(yaml_text, [])
    assert task.envs["KILN_BUCKET"] == HOSTILE_BUCKET
    from sky.utils import common_utils

    common_utils.check_cluster_name_is_valid(name)
    text = backend.describe(req)
    assert shlex.split(text.strip().splitlines()[-1]) == argv  # the quoted command round-trips
    assert_no_planted(yaml_text, " ".join(argv), text)


@pytest.mark.parametrize(
    ("opts", "culprit"),
    [({"cpus": "banana"}, "cpus"), ({"gpus": "H100:x"}, "accelerators"),
     ({"infra": "nocloud"}, "nocloud"), ({"gpus": "H100:1,A100:many"}, "A100:many")],
)
@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_invalid_options_raise_one_clear_line(opts, culprit):
    with pytest.raises(KilnError) as err:
        sp.SkyPilotBackend().render(request(**opts))
    msg = str(err.value)
    assert "\n" not in msg and culprit in msg
    if "," not in opts.get("gpus", ""):
        assert msg.startswith("packaged:sinter_job")


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_invalid_user_yaml_names_the_file(tmp_path):
    bad = tmp_path / "my job.yaml"
    bad.write_text("resources:\n  use_spot: maybe\nrun: echo\n")
    with pytest.raises(KilnError, match=r"my job\.yaml: .*use_spot"):
        sp.SkyPilotBackend().render(request(yaml_path=str(bad)))
    bad.write_text("envs:\n  MY_EXTRA: null\nrun: echo\n")  # a requirement nobody fills
    with pytest.raises(KilnError, match=r"my job\.yaml: .*MY_EXTRA"):
        sp.SkyPilotBackend().render(request(yaml_path=str(bad)))
    bad.write_text("run: echo\n---\nrun: echo\n")
    with pytest.raises(KilnError, match="exactly one"):
        sp.SkyPilotBackend().render(request(yaml_path=str(bad)))
    with pytest.raises(KilnError, match="cannot read"):
        sp.SkyPilotBackend().render(request(yaml_path=str(tmp_path / "missing.yaml")))
    with pytest.raises(KilnError, match="comma"):
        sp.SkyPilotBackend().render(request(batches=("b0,b1",)))


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_user_yaml_with_any_of_gets_overrides_everywhere(tmp_path):
    path = tmp_path / "anyof.yaml"
    path.write_text(
        "resources:\n  use_spot: true\n  any_of:\n    - {infra: aws, cpus: 4+}\n"
        "    - {infra: gcp, cpus: 4+}\nenvs: {KILN_BUCKET: null}\nrun: echo hi\n")
    rendered = sp.SkyPilotBackend().render(
        request(yaml_path=str(path), cpus="64+", use_spot=False))
    yaml_text, env = rendered.yaml_text, rendered.env_overrides
    assert yaml_text.startswith("# Rendered by qec-kiln")
    task = sky_validate(yaml_text, env)
    assert {str(r.cloud) for r in task.resources} == {"AWS", "GCP"}
    assert all(r.cpus == "64+" and not r.use_spot for r in task.resources)


# ---------------------------------------------------------------- secrets


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_secrets_are_passed_by_name_never_written(tmp_path, monkeypatch):
    backend = sp.SkyPilotBackend()
    seen = capture_sdk_launch(monkeypatch)
    req = request(yaml_path=str(secrets_yaml(tmp_path)))
    rendered = backend.render(req)
    yaml_text, env, argv = rendered.yaml_text, rendered.env_overrides, rendered.launch_argv
    secrets = [argv[i + 1] for i, a in enumerate(argv) if a == "--secret"]
    assert secrets == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert yaml.safe_load(yaml_text)["secrets"] == dict.fromkeys(secrets)
    described = backend.describe(req)
    dry = backend.describe_json(req)
    result = backend.launch(req)
    written = sorted(p for p in (tmp_path / "kiln-home").rglob("*") if p.is_file())
    assert [p.name for p in written] == ["job.yaml", "launches.json"]
    task = seen["task"]
    assert task.secrets["AWS_SECRET_ACCESS_KEY"].get_secret_value() == "planted-secret-123"
    assert_no_planted(yaml_text, " ".join(argv), " ".join(map(str, env)), described,
                      result.message, str(dry), *(p.read_text() for p in written))
    # A session token expires: SkyPilot would re-inject it stale on every recovery.
    with pytest.raises(KilnError, match="AWS_SESSION_TOKEN expires"):
        backend.render(request(yaml_path=str(secrets_yaml(
            tmp_path, names=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")))))
    # SkyPilot accepts the null secrets offline (they are filled from --secret at launch).
    sky_validate(yaml_text, env)


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_secret_problems_are_refused_without_echoing_values(tmp_path, monkeypatch):
    path = secrets_yaml(tmp_path)
    inline = tmp_path / "inline.yaml"
    inline.write_text(path.read_text().replace(
        "  AWS_SECRET_ACCESS_KEY: null", "  AWS_SECRET_ACCESS_KEY: planted-secret-123"))
    with pytest.raises(KilnError, match="set it to null") as err:
        sp.SkyPilotBackend().render(request(yaml_path=str(inline)))
    assert_no_planted(str(err.value))

    in_envs = tmp_path / "in_envs.yaml"
    in_envs.write_text("envs:\n  MY_KEY: planted-google-token-789\nrun: echo\n")
    with pytest.raises(KilnError, match="GOOGLE_OAUTH_ACCESS_TOKEN") as err:
        sp.SkyPilotBackend().render(request(yaml_path=str(in_envs)))
    assert_no_planted(str(err.value))

    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(KilnError, match="AWS_SECRET_ACCESS_KEY is declared but not set"):
        sp.SkyPilotBackend().render(request(yaml_path=str(path)))


# ---------------------------------------------------------------- launch


@pytest.mark.slow  # renders with this checkout's wheel, built once per run: ~6 s
def test_launch_hands_the_rendered_task_to_the_sdk(tmp_path, monkeypatch):
    backend = sp.SkyPilotBackend()
    seen = capture_sdk_launch(monkeypatch, ids=(13, 11, 12))
    req = request(cpus="8+", infra="aws")
    yaml_text = backend.render(req).yaml_text
    result = backend.launch(req)
    task = seen["task"]
    assert seen["name"] == task.name == sp.job_name("surface-d3") and seen["num_jobs"] == 3
    assert task.to_yaml_config()["envs"] == yaml.safe_load(yaml_text)["envs"]
    assert {str(r.cpus) for r in task.resources} == {"8+"}
    assert 'exec "$kiln" run-batch' in task.run and "--no-deps" in task.setup
    (wheel_remote, wheel_local), = task.file_mounts.items()
    assert task.envs["KILN_WHEEL"] == wheel_remote and Path(wheel_local).is_file()
    assert "skypilot" not in task.envs["KILN_NODE_REQUIREMENTS"]
    assert result.job_ids == {"b000": "11", "b003": "12", "b007": "13"}  # rank = sorted id
    record = json.loads((sp.state_dir("surface-d3") / "launches.json").read_text())
    assert record[0]["job_ids"] == [11, 12, 13]
    assert record[0]["batches"] == ["b000", "b003", "b007"]
    assert record[0]["bucket"] == "s3://bkt/sweeps"

    import sky

    def no_server(task, **kw):
        raise RuntimeError("Could not connect to SkyPilot API server")

    monkeypatch.setattr(sky.jobs, "launch", no_server)
    with pytest.raises(KilnError, match=r"sky.jobs.launch failed.*Could not connect"):
        backend.launch(req)


def test_pip_spec_and_image_choose_what_nodes_install(monkeypatch):
    backend = sp.SkyPilotBackend()
    seen = capture_sdk_launch(monkeypatch)
    req = request(infra="aws", kiln_pip_spec="qec-kiln==0.1.0")
    backend.launch(req)
    task = seen["task"]
    assert task.envs["KILN_PIP_SPEC"] == "qec-kiln==0.1.0" and task.envs["KILN_WHEEL"] == ""
    assert not task.file_mounts
    assert "install qec-kiln==0.1.0" in backend.describe(req)
    req = request(infra="aws", image="docker:ghcr.io/me/qec-kiln:0.1.0")
    backend.launch(req)
    task = seen["task"]
    assert task.setup is None and not task.file_mounts
    assert {r.image_id and next(iter(r.image_id.values())) for r in task.resources} == {
        "docker:ghcr.io/me/qec-kiln:0.1.0"}
    with pytest.raises(KilnError, match="--image 'ghcr.io/x'"):
        backend.render(request(infra="aws", image="ghcr.io/x"))


# ---------------------------------------------------------------- queue / status / cancel


FAILED_EXIT_2 = ("Job exited with exit code 2 (user program failure). To see the details, "
                 "run: sky jobs logs --controller 13")


def test_job_states_from_skypilot_sdk_records(monkeypatch):
    t0 = 1.7e9
    name = sp.job_name("surface-d3")
    ctl = FakeController(monkeypatch, [
        {"job_id": 11, "job_name": name, "status": "RUNNING", "recovery_count": 2},
        {"job_id": 12, "job_name": name, "status": "SUCCEEDED", "recovery_count": 0},
        {"job_id": 13, "job_name": name, "status": "FAILED", "recovery_count": 0,
         "failure_reason": FAILED_EXIT_2, "details": f"Failure: {FAILED_EXIT_2}"},
        {"job_id": 14, "job_name": "kiln-other-sweep", "status": "RUNNING"},
        {"job_id": 20, "job_name": name, "status": "PENDING", "submitted_at": t0 + 50},
        {"job_id": 31, "job_name": name, "status": "RECOVERING", "recovery_count": 1,
         "submitted_at": t0 + 100, "details": "Recovering: spot preemption"},
        {"job_id": 40, "job_name": name, "status": "STARTING", "submitted_at": t0 + 200},
    ])
    write_launches("surface-d3", [
        {"bucket": "s3://bkt/sweeps", "batches": ["b000", "b003", "b007", "b008"],
         "job_ids": [11, 12, 13, 20], "launched_at": t0 - 10},
        # relaunch of b008: the newer job wins
        {"bucket": "s3://bkt/sweeps", "batches": ["b008"], "job_ids": [31],
         "launched_at": t0 + 90},
        # ids not read from the output: the first job of that name submitted after it
        {"bucket": "s3://bkt/sweeps", "batches": ["b009"], "job_ids": [],
         "launched_at": t0 + 150},
        {"bucket": "s3://another-bucket", "batches": ["b001"], "job_ids": [14],
         "launched_at": t0},
    ])
    backend = sp.SkyPilotBackend()
    states = backend.job_states("s3://bkt/sweeps", "surface-d3")
    ((call, kw),) = ctl.calls
    assert call == "queue_v2" and kw["refresh"] is False and kw["skip_finished"] is False
    assert {"failure_reason", "details", "recovery_count"} <= set(kw["fields"])
    assert not {"resources", "workspace"} & set(kw["fields"])  # only what it shows and records:
    assert {"submitted_at", "end_at", "job_duration"} <= set(kw["fields"])  # skypilot/startup.py
    assert kw["name_match"] == sp.job_name("surface-d3")  # only the sweep's jobs
    assert {b: (s.state, s.job_id, s.recoveries, s.active) for b, s in states.items()} == {
        "b000": ("RUNNING", "11", 2, True),
        "b003": ("SUCCEEDED", "12", 0, False),
        "b007": ("FAILED", "13", 0, False),
        "b008": ("RECOVERING", "31", 1, True),
        "b009": ("STARTING", "40", 0, True),
    }
    assert states["b007"].detail.startswith(FAILED_EXIT_2)
    assert "exit 2: run-batch refused its input" in states["b007"].detail
    assert "sky jobs logs 13" in states["b007"].detail
    assert states["b008"].detail == "Recovering: spot preemption"
    assert states["b000"].detail == ""
    assert backend.warning == ""


def test_status_shows_why_a_job_failed_and_its_recoveries(monkeypatch, tmp_path, small_circuits,
                                                          capsys):
    """`qec-kiln status` of a SkyPilot sweep: a line per failed/recovering batch with SkyPilot's
    reason, the recoveries column, and the reason in --json."""
    from qec_kiln._command import _main as _cli
    from qec_kiln._storage import open_bucket

    bucket = str(tmp_path / "bkt")
    manifest = make_sweep(small_circuits, bucket, "st", max_shots=10, max_errors=10, jobs=2)
    store = open_bucket(bucket)
    name = sp.job_name("st")
    FakeController(monkeypatch, [
        {"job_id": 5, "job_name": name, "status": "FAILED", "failure_reason": FAILED_EXIT_2},
        {"job_id": 6, "job_name": name, "status": "RECOVERING", "recovery_count": 3,
         "details": "Recovering: spot preemption"},
    ])
    write_launches("st", [{"bucket": store.url,
                            "batches": [b.id for b in manifest.batches], "job_ids": [5, 6],
                            "launched_at": 1.0}])
    capsys.readouterr()
    assert _cli.main(["status", "--bucket", bucket, "--sweep", "st",
                      "--backend", "skypilot"]) == 0
    text = capsys.readouterr().out
    b0, b1 = (b.id for b in manifest.batches)
    assert f"{b0} FAILED (job 5, 0 recoveries): {FAILED_EXIT_2} (exit 2:" in text
    assert f"{b1} RECOVERING (job 6, 3 recoveries): Recovering: spot preemption" in text
    assert "recoveries" in text  # the table's column
    assert _cli.main(["status", "--bucket", bucket, "--sweep", "st", "--backend", "skypilot",
                      "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    sweeps = data if isinstance(data, list) else data.get("sweeps", [data])
    rows = {b["id"]: b for b in sweeps[0]["batches"]}
    assert rows[b0]["job_detail"].startswith(FAILED_EXIT_2)
    assert rows[b1]["recoveries"] == 3


@pytest.mark.parametrize("failure", ["no-sky", "no-server"])
def test_job_states_when_skypilot_is_unreachable(monkeypatch, failure):
    import sky

    if failure == "no-sky":
        def fail(*a, **kw):
            raise KilnError("--backend skypilot needs SkyPilot, which is not installed here")
        monkeypatch.setattr(sp, "import_sky", fail)
    else:
        def fail(*a, **kw):  # what the SDK raises with no API server
            raise sky.exceptions.ApiServerConnectionError("http://127.0.0.1:46580")
        monkeypatch.setattr(sky.jobs, "queue_v2", fail)
    backend = sp.SkyPilotBackend()
    assert backend.job_states("s3://bkt/sweeps", "surface-d3") == {}
    assert backend.warning.startswith("SkyPilot job states unavailable")
    with pytest.raises(KilnError, match="nothing was cancelled"):
        backend.cancel("s3://bkt/sweeps", "surface-d3")


def test_cancel_by_ids_gracefully_and_reports_only_what_was_cancelled(monkeypatch):
    name = sp.job_name("surface-d3")
    rows = [
        {"job_id": 11, "job_name": name, "status": "RUNNING"},
        {"job_id": 12, "job_name": name, "status": "SUCCEEDED"},
        {"job_id": 13, "job_name": name, "status": "RECOVERING"},
        {"job_id": 14, "job_name": "kiln-other", "status": "RUNNING"},
    ]
    ctl = FakeController(monkeypatch, rows, cancel_lag=2)
    backend = sp.SkyPilotBackend()
    backend.cancel_poll_s = 0.01
    assert backend.cancel("s3://bkt/sweeps", "surface-d3") == ["11", "13"]
    cancels = [kw for c, kw in ctl.calls if c == "cancel"]
    assert cancels == [{"job_ids": [11, 13], "graceful": True}]  # by id, never by name
    assert [kw for c, kw in ctl.calls if c == "stop"] == [["11"]]  # the running one, first
    assert [c for c, _ in ctl.calls].count("queue_v2") == 4  # waited for CANCELLING
    assert {r["job_id"]: r["status"] for r in ctl.rows}[14] == "RUNNING"

    ctl.calls.clear()
    assert backend.cancel("s3://bkt/sweeps", "nothing-running") == []
    assert [c for c, _ in ctl.calls] == ["queue_v2"]


def test_a_cancel_that_cancels_nothing_never_reports_success(monkeypatch, capsys, tmp_path,
                                                             small_circuits):
    """SkyPilot accepted the request but cancelled nothing (e.g. "No job to cancel", a job of
    another workspace): cancel raises, and the CLI exits non-zero without "cancelled"."""
    name = sp.job_name("surface-d3")
    FakeController(monkeypatch, [{"job_id": 11, "job_name": name, "status": "RUNNING"}],
                   cancels=False)
    backend = sp.SkyPilotBackend()
    backend.cancel_wait_s, backend.cancel_poll_s = 0.05, 0.01
    with pytest.raises(KilnError, match=r"cancelled none of jobs \[11\].*11 RUNNING"):
        backend.cancel("s3://bkt/sweeps", "surface-d3")

    # The job ended by itself between the queue and the cancel: not reported as cancelled.
    FakeController(monkeypatch, [{"job_id": 11, "job_name": name, "status": "RUNNING"}],
                   cancels=True).rows[0]["status"] = "SUCCEEDED"
    assert backend.cancel("s3://bkt/sweeps", "surface-d3") == []


def test_parse_job_ids_from_real_cli_messages():
    assert parse_job_ids("Jobs submitted with IDs: 4-6,9.\n📋 Useful Commands") == [4, 5, 6, 9]
    assert parse_job_ids("\nManaged Job ID: 12\n├── To cancel") == [12]
    assert parse_job_ids("⚙︎ Job submitted, ID: 7-8\n") == [7, 8]
    assert parse_job_ids("nothing here") == []


# ---------------------------------------------------------------- the installed sky executable


@pytest.mark.slow
def test_installed_sky_cli_accepts_every_flag_we_pass(tmp_path):
    """The real `sky` executable, run through the backend's default runner (the seam's default)."""
    assert Path(sdk.sky_executable()).name == "sky"
    backend = sp.SkyPilotBackend()
    launch = backend.render(request(yaml_path=str(secrets_yaml(tmp_path)))).launch_argv
    used = {
        "launch": {a for a in launch if a.startswith("-")},
        "cancel": {"--yes", "--graceful"},  # the shell equivalent docs/reliability.md names
    }
    assert used["launch"] == {"--yes", "--detach-run", "--name", "--num-jobs", "--env",
                              "--secret"}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = {cmd: pool.submit(sdk.run_sky, ["sky", "jobs", cmd, "--help"],
                                    stream=cmd == "launch", timeout=240)  # slow to import
                   for cmd in used}
        for cmd, future in futures.items():
            proc = future.result()
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert proc.args[0] == sdk.sky_executable()  # "sky" resolved to the installed one
            for flag in used[cmd]:
                assert re.search(rf"(^|[\s,]){re.escape(flag)}[\s,/]", proc.stdout, re.M), (
                    cmd, flag)
    assert time.monotonic() - started < 180  # three --help calls at once, none hanging


@pytest.mark.slow
def test_dry_run_json_gives_the_exact_task_and_its_file_mounts(tmp_path, small_circuits, capsys):
    from qec_kiln._command import _main as _cli

    rc = _cli.main(["launch", str(small_circuits), "--backend", "skypilot", "--bucket",
                    "s3://bkt/sweeps", "--name", "dry", "--infra", "aws", "--jobs", "2",
                    "--max-shots", "1000", "--dry-run", "--json"])
    assert rc == 0
    backend = json.loads(capsys.readouterr().out)["backend"]
    task = yaml.safe_load(backend["task_yaml"])
    assert {k for k, v in task["envs"].items() if v is None} == set()
    assert task["envs"]["KILN_BATCHES"] == "b000,b001" and backend["num_jobs"] == 2
    assert backend["file_mounts"] == task["file_mounts"]
    assert all(Path(local).is_file() for local in backend["file_mounts"].values())
    assert task["envs"]["KILN_WHEEL"] in backend["file_mounts"]
    assert "instance profile" in backend["node_identity"]
    assert "stim==" in backend["node_install"] and "skypilot" not in backend["node_install"]
    assert_no_planted(backend["task_yaml"], json.dumps(backend))


def test_controller_warnings_say_what_to_do():
    """A sweep beyond the default jobs controller's limits (SkyPilot's own formulas) is warned
    about in the dry run, with the way out; a small one is not."""
    from qec_kiln._backends.skypilot.parse import controller_warnings

    [w] = controller_warnings(2000, 2000)
    assert "600 at once" in w and "--workers K" in w and "memory" in w
    [w] = controller_warnings(100, 100)
    assert "24 at a time" in w
    assert controller_warnings(10, 10) == [] and controller_warnings(8, 2000) == []


@pytest.mark.parametrize("name", ["sinter_job.yaml", "sinter_job_gpu.yaml", "sinter_pool.yaml"])
def test_a_node_without_uv_or_the_objects_python_fails_setup_in_one_line(name, tmp_path):
    """The pip fallback builds the venv on the Python a sweep's shipped objects need: a node
    that has neither uv nor that python3.X stops its setup with exit 2 and one line."""
    setup = yaml.safe_load(sp.packaged_yaml_text(name))["setup"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KILN_WHEEL": "kiln.whl",
           "KILN_PIP_SPEC": "", "KILN_NODE_REQUIREMENTS": "stim", "KILN_PYTHON": "3.99"}
    proc = subprocess.run(["bash", "-c", setup], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "decoder objects need Python 3.99: no python3.99 and no uv" in proc.stderr

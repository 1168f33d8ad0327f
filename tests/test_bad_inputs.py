"""Bad input: every case gets exactly one clear ``error: ...`` line on stderr that names the culprit
(file, flag or URL) and says what to do, a non-zero exit, and nothing launched or overwritten.
Hostile file names are not bad input: they must work end to end.

The CLI runs as a subprocess (``python -m qec_kiln``), so exit codes and stderr are the real ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
import sinter
from kiln_helpers import REPO, run_kiln, write_surface_circuits

from qec_kiln._sweep.fragments import parse_fragment

SMALL = ("d=3,p=0.001,b=X,type=rotated_surface_memory.stim",
         "d=3,p=0.01,b=X,type=rotated_surface_memory.stim")


@pytest.fixture(scope="module")
def circuit_text(tmp_path_factory) -> str:
    folder = write_surface_circuits(tmp_path_factory.mktemp("one"), distances=(3,), noises=(0.001,))
    return (folder / SMALL[0]).read_text()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict:
    """A small sweep run to completion in a local bucket (copied by each test that damages it)."""
    root = tmp_path_factory.mktemp("finished")
    circuits = write_surface_circuits(root / "circuits", distances=(3,), noises=(0.001, 0.01))
    env = {"QEC_KILN_HOME": str(root / "home"), "QEC_KILN_WORK_DIR": str(root / "work")}
    args = [str(circuits), "--max-shots", "4000", "--max-errors", "40", "--name", "done",
            "--jobs", "2"]
    r = run_kiln("launch", *args, "--bucket", str(root / "bucket"), env=env)
    assert r.returncode == 0, r.stderr
    return {"root": root, "circuits": circuits, "args": args}


@dataclasses.dataclass
class Ctx:
    tmp: pathlib.Path
    request: pytest.FixtureRequest
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    bucket: pathlib.Path | None = None  # a local bucket the command must not change
    snapshot: dict[str, bytes] = dataclasses.field(default_factory=dict)
    s3: object = None  # (client, bucket name) of an S3 bucket that must gain no object
    s3_before: set = dataclasses.field(default_factory=set)
    out: pathlib.Path | None = None  # a merge --out that must keep its old content

    def circuits(self, files: dict[str, bytes | str]) -> pathlib.Path:
        folder = self.tmp / "circuits"
        folder.mkdir(exist_ok=True)
        for name, data in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, str):
                data = data.encode()
            path.write_bytes(data)
        return folder

    def finished_copy(self) -> tuple[pathlib.Path, dict]:
        fin = self.request.getfixturevalue("finished")
        self.bucket = self.tmp / "bucket"
        shutil.copytree(fin["root"] / "bucket", self.bucket)
        return self.bucket, fin

    def out_file(self) -> pathlib.Path:
        self.out = self.tmp / "merged.csv"
        self.out.write_text("an older merge: must stay\n")
        return self.out


def _tree(folder: pathlib.Path | None) -> dict[str, bytes]:
    if folder is None or not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@dataclasses.dataclass
class Case:
    id: str
    setup: Callable[[Ctx], list[str]]  # the argv after `qec-kiln`
    expect: tuple[str, ...]  # substrings of the error line: the culprit and the remedy
    fixtures: tuple[str, ...] = ()
    #: Only in the full run (``make test``), not ``make fast``: a case that takes seconds (a real
    #: sweep run first, an S3 server with IAM, retries) or whose check test_discover.py and
    #: test_storage.py already make in-process, so the fast loop keeps a few cases of each kind.
    slow: bool = False


def _launch(ctx: Ctx, folder: pathlib.Path | str, *extra: str) -> list[str]:
    ctx.bucket = ctx.bucket or ctx.tmp / "bucket"
    return ["launch", str(folder), "--max-shots", "1000", "--max-errors", "10", "--bucket",
            str(ctx.bucket), "--name", "bad", *extra]


# --- circuits ---------------------------------------------------------------------------------


def malformed_stim(ctx):
    folder = ctx.circuits({"d=3,p=0.001,b=X,type=bad.stim": "H 0\nCNOT 0 1\nNOT_A_GATE 2\n"})
    return _launch(ctx, folder)


def no_observables(ctx):
    folder = ctx.circuits({"d=3,p=0.001,b=X,type=noobs.stim":
                           "R 0\nX_ERROR(0.1) 0\nM 0\nDETECTOR rec[-1]\n"})
    return _launch(ctx, folder)


def empty_folder(ctx):
    (ctx.tmp / "empty").mkdir()
    return _launch(ctx, ctx.tmp / "empty")


def missing_folder(ctx):
    return _launch(ctx, ctx.tmp / "no-such-folder")


def non_stim_files(ctx):
    return _launch(ctx, ctx.circuits({"notes.txt": "hello", "data.csv": "a,b\n",
                                      "d=3.stim.bak": "H 0\n"}))


def duplicate_circuits(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({f"run1/{SMALL[0]}": text, f"run2/{SMALL[0]}": text}))


def unparsable_file_name(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({"surface code d3.stim": text}))


def control_character_in_name(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({"d=3,p=0.001,x=a\nb.stim": text}))


def not_utf8(ctx):
    return _launch(ctx, ctx.circuits({"d=3,p=0.001,b=X,type=latin1.stim": b"R 0\n# caf\xe9\n"}))


def tsim_without_sampler(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({"d=3,p=0.001,b=X,type=t_gate.stim": "S[T] 0\n" + text}))


def undecomposable_for_pymatching(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    hyper = ("X_ERROR(0.1) 0\nM 0\nDETECTOR rec[-1]\nDETECTOR rec[-1]\nDETECTOR rec[-1]\n"
             "OBSERVABLE_INCLUDE(0) rec[-1]\n")
    return _launch(ctx, ctx.circuits({SMALL[0]: text, "d=1,p=0.1,type=hyper.stim": hyper}))


def dangling_symlink(ctx):
    folder = _good(ctx)
    (folder / "more").symlink_to(ctx.tmp / "unmounted-disk")
    return _launch(ctx, folder)


def fifo_circuit(ctx):
    folder = _good(ctx)
    os.mkfifo(folder / "d=5,p=0.001,b=X,type=fifo.stim")
    return _launch(ctx, folder)


def repeated_metadata_key(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({"d=3,p=0.001,d=5.stim": text}))


def nan_metadata(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({"d=3,p=nan.stim": text}))


def metadata_in_two_key_orders(ctx):
    text = ctx.request.getfixturevalue("circuit_text")
    return _launch(ctx, ctx.circuits({"d=3,p=0.001.stim": text, "p=0.001,d=3.stim": text}))


def _good(ctx) -> pathlib.Path:
    return ctx.circuits({SMALL[0]: ctx.request.getfixturevalue("circuit_text")})


# --- flags --------------------------------------------------------------------------------------


def unknown_decoder(ctx):
    return _launch(ctx, _good(ctx), "--decoders", "pymatchin")


def max_shots_zero(ctx):
    return [*_launch(ctx, _good(ctx)), "--max-shots", "0"]


def max_shots_negative(ctx):
    return [*_launch(ctx, _good(ctx)), "--max-shots", "-5"]


def max_errors_unparsable(ctx):
    return [*_launch(ctx, _good(ctx)), "--max-errors", "1O0"]


def task_targets_bad_batch_options(ctx):
    # a record of five whose batch options are not positive integers
    return [*_launch(ctx, _good(ctx)), "--task-targets", '{"x.stim": {"pymatching": [9, 1, 0, 8, 1]}}']


def max_shots_fraction(ctx):
    return [*_launch(ctx, _good(ctx)), "--max-shots", "1.5e3.2"]


def sync_seconds_zero(ctx):
    return [*_launch(ctx, _good(ctx)), "--sync-seconds", "0"]


def bad_sweep_name(ctx):
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--name") + 1] = "my sweep;$(reboot)"
    return argv


def unknown_backend(ctx):
    return _launch(ctx, _good(ctx), "--backend", "kubernetes")


# --- bucket URLs and credentials -----------------------------------------------------------------


def bad_scheme(ctx):
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--bucket") + 1] = "https://example.com/results"
    ctx.bucket = None
    return argv


def gcs_scheme_typo(ctx):
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--bucket") + 1] = "gcs://my-results"
    ctx.bucket = None
    return argv


def bad_s3_bucket_name(ctx):
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--bucket") + 1] = "s3://My_Results"
    ctx.bucket = None
    return argv


def _no_aws(ctx) -> None:
    for var in list(os.environ):
        if var.startswith("AWS_"):
            ctx.env[var] = ""  # removed in run_case
    ctx.env.update({"AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_CONFIG_FILE": "/dev/null",
                    "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"})


def s3_no_credentials(ctx):
    server = ctx.request.getfixturevalue("s3_server")
    if not server.listening:
        server.start()
    name = f"kiln-bad-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    ctx.s3 = (server.client(), name)
    ctx.s3_before = _s3_keys(ctx.s3)
    _no_aws(ctx)
    ctx.env["AWS_ENDPOINT_URL"] = server.endpoint  # never the real AWS
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--bucket") + 1] = f"s3://{name}/kiln"
    ctx.bucket = None
    return argv


def _s3_auth_case(ctx, key_id: str, secret: str) -> list[str]:
    auth = ctx.request.getfixturevalue("s3_auth")
    ctx.s3 = (auth.server.client(auth.access_key_id, auth.secret_access_key), auth.bucket)
    ctx.s3_before = _s3_keys(ctx.s3)
    _no_aws(ctx)
    ctx.env.update({"AWS_ENDPOINT_URL": auth.endpoint, "AWS_ACCESS_KEY_ID": key_id,
                    "AWS_SECRET_ACCESS_KEY": secret})
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--bucket") + 1] = f"s3://{auth.bucket}/bad-{uuid.uuid4().hex[:8]}"
    ctx.bucket = None
    return argv


def s3_wrong_credentials(ctx):
    return _s3_auth_case(ctx, "AKIAWRONGWRONGWRONG1", "not-the-secret")


def s3_access_denied(ctx):
    auth = ctx.request.getfixturevalue("s3_auth")
    return _s3_auth_case(ctx, auth.denied_access_key_id, auth.denied_secret_access_key)


def s3_unreachable_endpoint(ctx):
    from fixtures_servers import free_port

    _no_aws(ctx)
    ctx.env.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    argv = _launch(ctx, _good(ctx))
    argv[argv.index("--bucket") + 1] = "s3://unreachable-results/kiln"
    ctx.bucket = None
    return argv


# --- fragments and manifests in the bucket -------------------------------------------------------


def _damage(ctx, batch: str, data: bytes) -> pathlib.Path:
    bucket, _ = ctx.finished_copy()
    (bucket / "done" / "fragments" / f"{batch}.csv").write_bytes(data)
    return bucket


GARBAGE = b"\x89PNG\r\n\x1a\n\x00\x00garbage that is not a sinter CSV\n"
OTHER_HEADER = b"shots,errors,seconds,decoder\n100,2,0.1,pymatching\n"


def merge_garbage_fragment(ctx):
    bucket = _damage(ctx, "b000", GARBAGE)
    return ["merge", "--bucket", str(bucket), "--out", str(ctx.out_file())]


def merge_fragment_with_other_header(ctx):
    bucket = _damage(ctx, "b001", OTHER_HEADER)
    return ["merge", "--bucket", str(bucket), "--out", str(ctx.out_file())]


def run_batch_on_garbage_fragment(ctx):
    bucket = _damage(ctx, "b000", GARBAGE)
    return ["run-batch", "--bucket", str(bucket), "--sweep", "done", "--batch", "b000",
            "--work-dir", str(ctx.tmp / "work")]


def relaunch_with_garbage_fragment(ctx):
    bucket = _damage(ctx, "b000", GARBAGE)
    fin = ctx.request.getfixturevalue("finished")
    return ["launch", *fin["args"], "--bucket", str(bucket)]


def relaunch_fresh_with_other_inputs(ctx):
    """--name of a finished sweep with other targets tops it up (a new sweep NAME-<hash>);
    with --fresh it is refused: a merge of the bucket would add the rows already there."""
    bucket, fin = ctx.finished_copy()
    args = list(fin["args"])
    args[args.index("--max-shots") + 1] = "8000"
    return ["launch", *args, "--bucket", str(bucket), "--fresh"]


def _other_version(ctx) -> pathlib.Path:
    bucket, _ = ctx.finished_copy()
    path = bucket / "done" / "manifest.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    data["versions"]["qec-kiln"] = "9.9.0"
    path.write_text(json.dumps(data, indent=1))
    return bucket


def manifest_other_version_merge(ctx):
    return ["merge", "--bucket", str(_other_version(ctx)), "--out", str(ctx.out_file())]


def manifest_other_version_status(ctx):
    return ["status", "--bucket", str(_other_version(ctx))]


def manifest_other_version_run_batch(ctx):
    return ["run-batch", "--bucket", str(_other_version(ctx)), "--sweep", "done", "--batch",
            "b000", "--work-dir", str(ctx.tmp / "work")]


def manifest_other_version_launch(ctx):
    bucket = _other_version(ctx)
    fin = ctx.request.getfixturevalue("finished")
    return ["launch", *fin["args"], "--bucket", str(bucket)]


def run_batch_unknown_batch(ctx):
    bucket, _ = ctx.finished_copy()
    return ["run-batch", "--bucket", str(bucket), "--sweep", "done", "--batch", "b042",
            "--work-dir", str(ctx.tmp / "work")]


def merge_empty_bucket(ctx):
    ctx.bucket = ctx.tmp / "empty-bucket"
    ctx.bucket.mkdir()
    return ["merge", "--bucket", str(ctx.bucket), "--out", str(ctx.out_file())]


def merge_out_is_a_directory(ctx):
    bucket, _ = ctx.finished_copy()
    (ctx.tmp / "results").mkdir()
    return ["merge", "--bucket", str(bucket), "--out", str(ctx.tmp / "results")]


CASES = [
    Case("malformed-stim", malformed_stim, ("type=bad.stim", "NOT_A_GATE", "fix or remove")),
    Case("no-observables", no_observables, ("type=noobs.stim", "OBSERVABLE_INCLUDE", "add"), slow=True),
    Case("empty-folder", empty_folder, ("empty", "put your .stim circuits")),
    Case("missing-folder", missing_folder, ("no-such-folder", "no such folder"), slow=True),
    Case("non-stim-files", non_stim_files, ("no .stim files", "notes.txt", "ending in .stim"), slow=True),
    Case("duplicate-circuits", duplicate_circuits, ("run2/" + SMALL[0], "run1/" + SMALL[0],
                                                    "remove one"), slow=True),
    Case("unparsable-file-name", unparsable_file_name, ("surface code d3.stim", "rename"), slow=True),
    Case("not-utf8", not_utf8, ("type=latin1.stim", "encoding")),
    Case("control-character-in-name", control_character_in_name,
         ("p=0.001,x=a", "control characters", "rename")),
    Case("tsim-without-sampler", tsim_without_sampler, ("type=t_gate.stim", "S[T]", "tsim"), slow=True),
    Case("undecomposable-for-pymatching", undecomposable_for_pymatching,
         ("type=hyper.stim", "--decoders pymatching", "hypergraph_union_find"), slow=True),
    Case("dangling-symlink", dangling_symlink, ("circuits/more", "does not exist", "fix or remove"),
         slow=True),
    Case("fifo-circuit", fifo_circuit, ("type=fifo.stim", "FIFO", "regular .stim file"), slow=True),
    Case("repeated-metadata-key", repeated_metadata_key, ("d=3,p=0.001,d=5.stim", "key 'd'",
                                                          "rename"), slow=True),
    Case("nan-metadata", nan_metadata, ("d=3,p=nan.stim", "not a finite number"), slow=True),
    Case("metadata-in-two-key-orders", metadata_in_two_key_orders,
         ("d=3,p=0.001.stim", "p=0.001,d=3.stim", "written differently"), slow=True),
    Case("unknown-decoder", unknown_decoder, ("--decoders 'pymatchin'", "choose from")),
    Case("max-shots-zero", max_shots_zero, ("--max-shots", "positive integer", "'0'")),
    Case("task-targets-bad-batch-options", task_targets_bad_batch_options,
         ("--task-targets", "max_batch_seconds]", "positive integer or null")),
    Case("max-shots-negative", max_shots_negative, ("--max-shots", "positive integer", "'-5'")),
    Case("max-errors-unparsable", max_errors_unparsable, ("--max-errors", "'1O0'", "not a number")),
    Case("max-shots-unparsable", max_shots_fraction, ("--max-shots", "'1.5e3.2'")),
    Case("sync-seconds-zero", sync_seconds_zero, ("--sync-seconds", "positive")),
    Case("bad-sweep-name", bad_sweep_name, ("--name", "my sweep;$(reboot)", "letters, digits")),
    Case("unknown-backend", unknown_backend, ("--backend 'kubernetes'", "choose one of")),
    Case("bad-url-scheme", bad_scheme, ("https://example.com/results", "unsupported scheme",
                                        "use s3://")),
    Case("gcs-scheme-typo", gcs_scheme_typo, ("gcs://my-results", "write gs://"), slow=True),
    Case("bad-s3-bucket-name", bad_s3_bucket_name, ("s3://My_Results", "not a valid S3 bucket"), slow=True),
    Case("s3-no-credentials", s3_no_credentials, ("s3://", "no AWS credentials", "AWS_PROFILE"), slow=True),
    Case("s3-wrong-credentials", s3_wrong_credentials, ("s3://",), slow=True),
    Case("s3-access-denied", s3_access_denied, ("s3://",), slow=True),
    Case("s3-unreachable-endpoint", s3_unreachable_endpoint, ("s3://unreachable-results/kiln",
                                                              "cannot reach", "AWS_ENDPOINT_URL"), slow=True),
    Case("merge-garbage-fragment", merge_garbage_fragment, ("done/fragments/b000.csv",
                                                            "not a sinter", "move it out"), slow=True),
    Case("merge-fragment-other-header", merge_fragment_with_other_header,
         ("done/fragments/b001.csv", "header", "move it out"), slow=True),
    Case("run-batch-garbage-fragment", run_batch_on_garbage_fragment,
         ("done/fragments/b000.csv", "not a sinter", "move it out"), slow=True),
    Case("relaunch-garbage-fragment", relaunch_with_garbage_fragment,
         ("done/fragments/b000.csv", "not a sinter", "move it out"), slow=True),
    Case("relaunch-fresh-other-inputs", relaunch_fresh_with_other_inputs,
         ("--fresh", "already holds rows", "new --bucket"), slow=True),
    Case("manifest-other-version-merge", manifest_other_version_merge,
         ("done/manifest.json", "format 99", "9.9.0"), slow=True),
    Case("manifest-other-version-status", manifest_other_version_status,
         ("done/manifest.json", "format 99", "9.9.0"), slow=True),
    Case("manifest-other-version-run-batch", manifest_other_version_run_batch,
         ("done/manifest.json", "format 99", "9.9.0"), slow=True),
    Case("manifest-other-version-launch", manifest_other_version_launch,
         ("done/manifest.json", "format 99", "9.9.0"), slow=True),
    Case("run-batch-unknown-batch", run_batch_unknown_batch, ("--batch 'b042'", "b000, b001"), slow=True),
    Case("merge-empty-bucket", merge_empty_bucket, ("empty-bucket", "no sweeps", "launch one")),
    Case("merge-out-is-a-directory", merge_out_is_a_directory, ("--out", "results",
                                                                "is a directory"), slow=True),
]


def run_case(case: Case, ctx: Ctx) -> tuple[subprocess.CompletedProcess, str]:
    argv = case.setup(ctx)
    ctx.snapshot = _tree(ctx.bucket)
    env = {**os.environ, **ctx.env}
    for var in [k for k, v in env.items() if v == ""]:
        del env[var]
    cwd = ctx.tmp / "cwd"
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "qec_kiln", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    return proc, lines[0] if len(lines) == 1 else ""


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] * c.slow)
                                  for c in CASES])
def test_bad_input_gets_one_clear_error_and_changes_nothing(case: Case, tmp_path, request):
    ctx = Ctx(tmp_path, request)
    proc, line = run_case(case, ctx)
    shown = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode != 0, shown
    assert "Traceback" not in proc.stderr, shown
    assert line, f"expected exactly one error line:\n{shown}"
    assert line.startswith(("error: ", "qec-kiln ")), line
    if line.startswith("qec-kiln "):  # argparse: 'qec-kiln launch: error: ...'
        assert ": error: " in line, line
    for part in case.expect:
        assert part in line, f"{part!r} not in {line!r}"
    assert len(line) < 600, "an error line should be readable"
    # Nothing launched or overwritten.
    assert _tree(ctx.bucket) == ctx.snapshot, "the bucket was changed"
    home = pathlib.Path(os.environ["QEC_KILN_HOME"])
    assert not (home / "local").exists() or not any((home / "local").rglob("*.pid")), \
        "a batch was started"
    if ctx.out is not None:
        assert ctx.out.read_text() == "an older merge: must stay\n", "--out was overwritten"
        assert [p.name for p in ctx.out.parent.glob(".merged.csv*")] == [], "staged file left"
    if ctx.s3 is not None:  # the shared test bucket holds no new object (other tests write there too)
        assert _s3_keys(ctx.s3) == ctx.s3_before, "an object was written to the S3 bucket"
    print(f"\n{case.id}: exit {proc.returncode}: {line}")  # bench/bad_inputs_table.py reads it


def _s3_keys(s3) -> set[str]:
    client, name = s3
    try:
        listed = client.list_objects_v2(Bucket=name).get("Contents", [])
    except client.exceptions.NoSuchBucket:
        return set()
    return {o["Key"] for o in listed}


# --- not errors: a truncated fragment, hostile names ---------------------------------------------


@pytest.mark.slow
def test_truncated_fragment_merge_warns_and_run_batch_resumes(tmp_path, finished):
    bucket = tmp_path / "bucket"
    shutil.copytree(finished["root"] / "bucket", bucket)
    frag = bucket / "done" / "fragments" / "b001.csv"
    whole = frag.read_bytes()
    lines = whole.splitlines(keepends=True)
    assert len(lines) >= 2  # the header and at least one row
    cut = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]  # half of the last row
    frag.write_bytes(cut)
    complete = b"".join(lines[:-1])

    out = tmp_path / "merged.csv"
    r = run_kiln("merge", "--bucket", str(bucket), "--out", str(out))
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "done/fragments/b001.csv" in warnings[0], r.stderr
    assert "truncated last line" in warnings[0]
    assert frag.read_bytes() == cut, "merge must not repair the bucket"
    merged = {s.strong_id: s.shots for s in sinter.read_stats_from_csv_files(str(out))}
    expected: dict[str, int] = {}
    for f in (bucket / "done" / "fragments").glob("*.csv"):
        data = complete if f.name == "b001.csv" else f.read_bytes()
        for sid, st in parse_fragment(data, f.name).stats.items():
            expected[sid] = expected.get(sid, 0) + st.shots
    assert merged == expected

    r = run_kiln("run-batch", "--bucket", str(bucket), "--sweep", "done", "--batch", "b001",
                 "--work-dir", str(tmp_path / "work"), "--processes", "1")
    assert r.returncode == 0, r.stderr
    assert "dropped a truncated last line" in r.stderr
    resumed = frag.read_bytes()
    assert resumed.startswith(complete) and resumed != cut
    parse_fragment(resumed, "b001")  # valid: no half row glued to the next one
    r = run_kiln("merge", "--bucket", str(bucket), "--out", str(out), "--json")
    report = json.loads(r.stdout)
    assert report["reached"] == report["tasks"] and not report["warnings"], report


@pytest.mark.slow  # the ``finished`` sweep is a real launch: seconds
def test_a_finished_batch_with_a_damaged_tail_is_repaired_by_run_batch(tmp_path, finished):
    """Half a row after a finished fragment's complete lines (a copy by hand): run-batch has no
    shot left to take, yet it replaces the object by its complete lines, so merge stops warning."""
    bucket = tmp_path / "bucket"
    shutil.copytree(finished["root"] / "bucket", bucket)
    frag = bucket / "done" / "fragments" / "b001.csv"
    whole = frag.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    frag.write_bytes(whole + last[: len(last) // 2])
    r = run_kiln("run-batch", "--bucket", str(bucket), "--sweep", "done", "--batch", "b001",
                 "--work-dir", str(tmp_path / "work"), "--processes", "1")
    assert r.returncode == 0, r.stderr
    assert "dropped a truncated last line" in r.stderr
    assert frag.read_bytes() == whole
    r = run_kiln("merge", "--bucket", str(bucket), "--out", str(tmp_path / "m.csv"), "--json")
    report = json.loads(r.stdout)
    assert report["reached"] == report["tasks"] and not report["warnings"], report


HOSTILE_DIR = "we ird;'q\"$(touch pwned)`touch pwned2` ψ"
HOSTILE_NAME = "d=3,p=0.001,b=X,type=it's \"a\";$(touch pwned) `id` ψ é.stim"
PLAIN_NAME = "d=5,p=0.001,b=X,type=a b;c & d | e.stim"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["local", "s3"])
def test_hostile_file_names_work_end_to_end(store, tmp_path, request):
    src = write_surface_circuits(tmp_path / "src", distances=(3, 5), noises=(0.001,))
    circuits = tmp_path / "circuits;$(touch pwned)"
    (circuits / HOSTILE_DIR).mkdir(parents=True)
    shutil.copy(src / SMALL[0], circuits / HOSTILE_DIR / HOSTILE_NAME)
    shutil.copy(src / "d=5,p=0.001,b=X,type=rotated_surface_memory.stim", circuits / PLAIN_NAME)
    if store == "local":
        bucket = str(tmp_path / "bucket $(touch pwned);'x'")
    else:
        bucket = request.getfixturevalue("s3_env").url + "/pre fix;$(touch pwned)ψ"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = [str(circuits), "--max-shots", "3000", "--max-errors", "30", "--bucket", bucket,
              "--name", "hostile", "--jobs", "2"]

    r = run_kiln("launch", *common, "--dry-run", cwd=cwd)
    assert r.returncode == 0, r.stderr
    commands = [shlex.split(line) for line in r.stdout.splitlines() if "run-batch" in line]
    assert commands and all(c[c.index("--bucket") + 1] == bucket.rstrip("/") for c in commands)
    if store == "s3" and (REPO / "src" / "qec_kiln" / "_backends" / "skypilot.py").exists():
        r = run_kiln("launch", *common, "--dry-run", "--backend", "skypilot", cwd=cwd)
        assert r.returncode == 0, r.stderr
        sky = [shlex.split(line) for line in r.stdout.splitlines()
               if line.startswith("sky jobs launch")]
        assert sky and f"KILN_BUCKET={bucket}" in sky[0], r.stdout

    if (REPO / "src" / "qec_kiln" / "_backends" / "slurm.py").exists():
        # The sbatch script's lines, run by a real bash, give back the exact bucket.
        r = run_kiln("launch", *common, "--dry-run", "--backend", "slurm", cwd=cwd)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        exports = [line for line in lines if line.startswith("export KILN_")]
        run_line = next(line for line in lines if line.startswith("exec qec-kiln run-batch"))
        script = "\n".join([*exports, "printf '%s\\n' \"$KILN_BUCKET\"",
                            run_line.replace("exec qec-kiln", "printf '%s\\n'", 1)])
        shown = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                               env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"}, check=True)
        words = shown.stdout.splitlines()
        assert words[0] == bucket.rstrip("/"), words
        assert words[words.index("--bucket") + 1] == bucket.rstrip("/"), words

    r = run_kiln("launch", *common, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    out = cwd / "merged $(touch pwned).csv"
    r = run_kiln("merge", "--bucket", bucket, "--out", str(out), "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reached"] == 2
    types = {s.json_metadata["type"] for s in sinter.read_stats_from_csv_files(str(out))}
    # sinter took the metadata from the file names it was given: they reached it intact.
    assert types == {"it's \"a\";$(touch pwned) `id` ψ é", "a b;c & d | e"}
    home = pathlib.Path(os.environ["QEC_KILN_HOME"])
    for root in (tmp_path, home):  # every cwd of the run (work dirs are under QEC_KILN_HOME)
        assert not [p for p in root.rglob("pwned*") if p.is_file()], f"a name was run in {root}"
    for folder in (pathlib.Path.cwd(), REPO, pathlib.Path("/tmp")):
        assert not (folder / "pwned").exists() and not (folder / "pwned2").exists()

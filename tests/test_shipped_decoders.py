"""Custom decoder and sampler objects (``custom_decoders=``, issue 29): a ``sinter.Decoder`` and a
``sinter.Sampler`` whose classes exist only in a notebook-like ``__main__`` are pickled by value,
shipped beside the manifest and run by the unmodified ``sinter collect`` on the local backend and
on the real Slurm test cluster, with exact counts; a node refuses a changed object, another
Python minor version, and an object it cannot load, by name, before anything is sampled.

The circuit is noiseless, so the counts are exact: ``AlwaysFlip(1)`` predicts every observable
flipped (every shot is an error), ``AlwaysFlip(0)`` none; ``CountingSampler(key)`` counts each
shot under ``key`` and reports no error.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import subprocess
import sys

import cloudpickle
import pytest
import sinter
import stim
from kiln_helpers import NOTEBOOK_CELL, notebook, run_kiln

import qec_kiln
from qec_kiln._errors import KilnError
from qec_kiln._prepare import Fleet, prepare_sweep
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.manifest import decoder_object_key, load_manifest, manifest_key
from qec_kiln._sweep.shipped import python_version


@pytest.fixture
def noiseless(tmp_path):
    """One noiseless circuit: its observable never flips."""
    folder = tmp_path / "circuits"
    folder.mkdir()
    circuit = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2)
    (folder / "d=3,r=2.stim").write_text(str(circuit))
    return folder


def _upload(circuits, bucket, objects, decoders, **settings):
    """Plan and upload a sweep (as a launch does), starting nothing; its manifest."""
    settings = dict(custom_decoders=objects, decoders=decoders, max_shots=1000,
                    max_errors=10**6, name="shipped", jobs=1, **settings)
    prepared = prepare_sweep(str(circuits), Fleet.build(settings), open_bucket(str(bucket)),
                             lambda _line: None, commit=True)
    return prepared.manifest


def _run_batch(bucket, sweep="shipped", batch="b000"):
    return run_kiln("run-batch", "--bucket", str(bucket), "--sweep", sweep, "--batch", batch,
                    "--processes", "1", "--sync-seconds", "1")


def _sampled(bucket, sweep="shipped") -> list[str]:
    """The keys a run-batch leaves when it starts work (fragments, leases)."""
    keys = open_bucket(str(bucket)).list_keys(f"{sweep}/")
    return [k for k in keys if k.startswith((f"{sweep}/fragments/", f"{sweep}/leases/"))]


def test_the_notebook_classes_pickle_by_value_and_load_in_a_fresh_python():
    cell = notebook()
    blob = cloudpickle.dumps(cell.AlwaysFlip(1))
    with pytest.raises(pickle.PicklingError):  # what sinter's own pickling would meet
        pickle.dumps(cell.AlwaysFlip(1))
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys, cloudpickle; d = cloudpickle.loads(sys.stdin.buffer"
         ".read()); print(type(d).__name__, d.value)"],
        input=blob, capture_output=True, check=True)
    assert fresh.stdout.decode().split() == ["AlwaysFlip", "1"]


def test_decoder_and_sampler_objects_run_on_the_local_backend_with_exact_counts(
        noiseless, tmp_path, monkeypatch):
    # A run-batch and a sinter of their own (fresh interpreters, as on a node), not forks of
    # this process, which holds the classes.
    monkeypatch.setenv("QEC_KILN_FORK", "0")
    cell = notebook()
    bucket = tmp_path / "bucket"
    objects = {"flip": cell.AlwaysFlip(1), "counter": cell.CountingSampler("seen"),
               "unused": cell.AlwaysFlip(0)}
    lines: list[str] = []
    r = qec_kiln.launch(noiseless, custom_decoders=objects, decoders=["flip", "counter"],
                        max_shots=3000, max_errors=10**6, bucket=str(bucket), name="nb",
                        backend_options={"processes": 2}, log=lines.append)
    assert (r.launched, r.failed) == (["b000"], []), "\n".join(lines)
    stats = {s.decoder: s for s in qec_kiln.merge(str(bucket), None, sweep="nb").stats}
    assert sorted(stats) == ["counter", "flip"]  # the names given, and only the named objects
    assert (stats["flip"].shots, stats["flip"].errors) == (3000, 3000)
    assert (stats["counter"].shots, stats["counter"].errors) == (3000, 0)
    assert stats["counter"].custom_counts["seen"] == 3000
    # Rows carry sinter's strong_id of the task with the name the user gave.
    circuit = stim.Circuit.from_file(next(noiseless.glob("*.stim")))
    task = sinter.Task(circuit=circuit, decoder="flip", json_metadata={"d": 3, "r": 2},
                       detector_error_model=circuit.detector_error_model(
                           decompose_errors=True, approximate_disjoint_errors=True))
    assert stats["flip"].strong_id == task.strong_id()
    # The manifest records each shipped object's digest, which is the stored object's.
    store = open_bucket(str(bucket))
    m = load_manifest(store, "nb")
    assert m.shipped is not None and m.shipped.python == python_version()
    assert [(o.name, o.kind, o.type) for o in m.shipped.objects] == [
        ("flip", "decoder", "__main__.AlwaysFlip"), ("counter", "sampler", "__main__.CountingSampler")]
    for o in m.shipped.objects:
        data = store.read_bytes(decoder_object_key("nb", o.sha256))
        assert hashlib.sha256(data).hexdigest() == o.sha256
    # The same objects again: the same sweep, nothing left to launch.
    again = qec_kiln.launch(noiseless, custom_decoders=objects, decoders=["flip", "counter"],
                            max_shots=3000, max_errors=10**6, bucket=str(bucket), name="nb",
                            backend_options={"processes": 2})
    assert again.launched == [] and again.plan.exists


def test_another_object_under_the_same_name_is_another_sweep(noiseless, tmp_path):
    cell = notebook()
    bucket = str(tmp_path / "bucket")

    lines: list[str] = []

    def planned(obj):
        return qec_kiln.plan(noiseless, custom_decoders={"flip": obj}, decoders=["flip"],
                             bucket=bucket, log=lines.append).manifest

    one, same, other = planned(cell.AlwaysFlip(1)), planned(cell.AlwaysFlip(1)), planned(
        cell.AlwaysFlip(0))
    assert one.sweep == same.sweep and one.inputs_digest == same.inputs_digest
    assert other.sweep != one.sweep
    assert other.shipped is not None and one.shipped is not None
    assert other.shipped.digests()["flip"] != one.shipped.digests()["flip"]
    # The planner's pilot ran the notebook class in sinter's spawned worker (by value, wrapped).
    assert any("timing 1 task(s) with a pilot" in line for line in lines), lines
    assert not any("failed" in line for line in lines), lines
    # Without objects the digest (and so every existing sweep's name) is what it was.
    plain = qec_kiln.plan(noiseless, decoders=["pymatching"], bucket=bucket).manifest
    assert plain.shipped is None and "shipped_decoders" not in plain.to_json()


def test_a_restarted_notebook_plans_the_same_sweep(noiseless, tmp_path):
    """cloudpickle gives each class it pickles by value a random id per session, so the same
    notebook cell run in two Pythons pickles to other bytes: the sweep is named by the objects'
    identity (those ids blanked), so a restarted notebook resumes its sweep, while the node
    still checks the exact bytes the manifest records."""
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import qec_kiln; "
              "from kiln_helpers import notebook; cell = notebook(); "
              "m = qec_kiln.plan(sys.argv[2], custom_decoders={'flip': cell.AlwaysFlip(1)}, "
              "decoders=['flip'], bucket=sys.argv[3]).manifest; "
              "print(json.dumps([m.sweep, m.shipped.objects[0].sha256]))")
    runs = [json.loads(subprocess.run(
        [sys.executable, "-c", script, str(pathlib.Path(__file__).parent), str(noiseless),
         str(tmp_path / "bucket")], capture_output=True, text=True, check=True).stdout)
        for _ in range(2)]
    (one_sweep, one_bytes), (two_sweep, two_bytes) = runs
    assert one_bytes != two_bytes  # other class ids: other bytes
    assert one_sweep == two_sweep


def test_plan_lists_the_shipped_objects(noiseless, tmp_path, capsys):
    from qec_kiln._command._main_plan import print_plan

    cell = notebook()
    p = qec_kiln.plan(noiseless, custom_decoders={"flip": cell.AlwaysFlip(1),
                                                  "counter": cell.CountingSampler("k")},
                      decoders=["flip", "counter"], bucket=str(tmp_path / "bucket"),
                      log=lambda _line: None)
    shown = p.to_json()["shipped_decoders"]
    assert shown["python"] == python_version()
    assert {n: e["kind"] for n, e in shown["decoders"].items()} == {"flip": "decoder",
                                                                   "counter": "sampler"}
    print_plan(p)
    text = capsys.readouterr().out
    sha = next(o.sha256 for o in p.manifest.shipped.objects if o.name == "flip")[:12]
    assert f"flip: decoder __main__.AlwaysFlip, sha256 {sha}" in text
    assert f"the nodes need Python {python_version()}" in text


def test_a_changed_object_in_the_bucket_is_refused_by_name_and_never_loaded(noiseless, tmp_path):
    cell = notebook()
    bucket = tmp_path / "bucket"
    m = _upload(noiseless, bucket, {"flip": cell.AlwaysFlip(1)}, ["flip"])
    [shipped] = m.shipped.objects
    marker = tmp_path / "ran"

    class Payload:  # what an attacker with write access would store: code that runs on load
        def __reduce__(self):
            return (open, (str(marker), "w"))

    open_bucket(str(bucket)).write_bytes(decoder_object_key("shipped", shipped.sha256),
                                         pickle.dumps(Payload()))
    r = _run_batch(bucket)
    assert r.returncode == 2, r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "shipped decoder 'flip'" in line and f"not the {shipped.sha256[:12]}" in line
    assert not marker.exists()  # the changed bytes were never unpickled
    assert _sampled(bucket) == []  # no lease taken, no fragment written


def test_a_node_with_another_python_minor_version_refuses_by_name(noiseless, tmp_path):
    cell = notebook()
    bucket = tmp_path / "bucket"
    _upload(noiseless, bucket, {"flip": cell.AlwaysFlip(1)}, ["flip"])
    store = open_bucket(str(bucket))
    data = json.loads(store.read_bytes(manifest_key("shipped")))
    data["shipped_decoders"]["python"] = "3.99"  # as if launched from another Python
    store.write_bytes(manifest_key("shipped"), json.dumps(data).encode())
    r = _run_batch(bucket)
    assert r.returncode == 2, r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "'flip'" in line and "Python 3.99 on the launcher" in line
    assert f"this node runs Python {python_version()}" in line
    assert _sampled(bucket) == []


def test_an_object_the_node_cannot_load_is_named(noiseless, tmp_path, monkeypatch):
    """A class from a module of the launcher's only (pickled by reference): the node lacks it."""
    mine = tmp_path / "only_here"
    mine.mkdir()
    (mine / "my_decoders.py").write_text(NOTEBOOK_CELL)
    monkeypatch.syspath_prepend(str(mine))
    import my_decoders  # type: ignore[import-not-found]

    bucket = tmp_path / "bucket"
    _upload(noiseless, bucket, {"mine": my_decoders.AlwaysFlip(1)}, ["mine"])
    r = _run_batch(bucket)
    assert r.returncode == 2, r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "shipped decoder 'mine' (my_decoders.AlwaysFlip) cannot be loaded" in line
    assert "No module named 'my_decoders'" in line and "register_pickle_by_value" in line
    assert _sampled(bucket) == []


def test_bad_custom_decoders_are_refused_in_one_line(noiseless, tmp_path):
    cell = notebook()
    bucket = str(tmp_path / "bucket")
    with pytest.raises(KilnError, match=r"custom_decoders\['x'\] is a builtins.int, neither"):
        qec_kiln.plan(noiseless, custom_decoders={"x": 3}, decoders=["x"], bucket=bucket)
    with pytest.raises(KilnError, match="cannot be combined"):
        qec_kiln.plan(noiseless, custom_decoders={"flip": cell.AlwaysFlip(1)}, decoders=["flip"],
                      custom_decoders_module_function="qec_kiln.tsim:sinter_samplers",
                      bucket=bucket)
    with pytest.raises(KilnError, match="custom_decoders must map decoder names"):
        qec_kiln.plan(noiseless, custom_decoders=[cell.AlwaysFlip(1)], decoders=["flip"],
                      bucket=bucket)
    with pytest.raises(KilnError, match="'nope' is not a sinter decoder"):
        qec_kiln.plan(noiseless, custom_decoders={"flip": cell.AlwaysFlip(1)}, decoders=["nope"],
                      bucket=bucket)
    with pytest.raises(KilnError, match=r"custom_decoders\['flip'\] .* cannot be pickled"):
        unpicklable = cell.AlwaysFlip(1)
        unpicklable.lock = __import__("threading").Lock()
        qec_kiln.plan(noiseless, custom_decoders={"flip": unpicklable}, decoders=["flip"],
                      bucket=bucket)


def test_skypilot_nodes_make_their_venv_with_the_launchers_python_and_cloudpickle():
    import yaml

    from qec_kiln._backends import LaunchRequest
    from qec_kiln._backends.skypilot import backend as sp

    def rendered(python):
        req = LaunchRequest("s3://bkt/sweeps", "nb", ("b000",), sp.SkyPilotOptions(
            infra="aws", kiln_pip_spec="qec-kiln==0.1.0"), decoders=("flip",), python=python)
        return sp.SkyPilotBackend().describe_json(req)

    shipped, plain = rendered("3.11"), rendered(None)
    envs = yaml.safe_load(shipped["task_yaml"])["envs"]
    assert envs["KILN_PYTHON"] == "3.11"
    assert yaml.safe_load(plain["task_yaml"])["envs"]["KILN_PYTHON"] == ""
    assert f"cloudpickle=={cloudpickle.__version__}" in envs["KILN_NODE_REQUIREMENTS"].split()
    setup = yaml.safe_load(shipped["task_yaml"])["setup"]
    assert '"$uv" venv --quiet --python "${KILN_PYTHON:-python3}" "$venv"' in setup
    assert "on Python 3.11 (uv installs it)" in shipped["node_install"]


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_a_shipped_decoder_object_runs_on_the_real_slurm_cluster(slurm_cluster, noiseless,
                                                                 tmp_path, monkeypatch):
    from qec_kiln._backends.slurm import backend as sl

    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    cell = notebook()
    bucket = tmp_path / "bucket"
    lines: list[str] = []
    r = qec_kiln.launch(noiseless, custom_decoders={"flip": cell.AlwaysFlip(1),
                                                    "counter": cell.CountingSampler("seen")},
                        decoders=["flip", "counter"], max_shots=2000, max_errors=10**6,
                        bucket=str(bucket), name="sl-shipped", backend="slurm", jobs=2,
                        backend_options={"processes": 1, "sync_seconds": 1}, log=lines.append)
    assert len(r.launched) == 2 and not r.failed, "\n".join(lines)
    array = next(iter(r.job_ids.values())).split("_")[0]

    def finished() -> bool:
        states = slurm_cluster.states(array)
        return len(states) == 2 and set(states.values()) <= {"COMPLETED", "FAILED", "CANCELLED"}

    slurm_cluster.wait_for(finished, 180, "the sweep's array to finish")
    logs = sl.state_dir("sl-shipped") / "logs"
    assert set(slurm_cluster.states(array).values()) == {"COMPLETED"}, (
        "\n".join(p.read_text() for p in sorted(logs.glob("*.out"))))
    stats = {s.decoder: s for s in qec_kiln.merge(str(bucket), None, sweep="sl-shipped").stats}
    assert (stats["flip"].shots, stats["flip"].errors) == (2000, 2000)
    assert (stats["counter"].shots, stats["counter"].custom_counts["seen"]) == (2000, 2000)

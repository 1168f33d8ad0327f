"""The command line: spellings, numbers, one-line errors, and sinter pass-through options."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import sinter

from qec_kiln._argtypes import positive_float, positive_int, sinter_options
from qec_kiln._command._main import parse_args
from qec_kiln._errors import KilnError


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1_000_000", 1_000_000), ("1e6", 10**6)])
def test_positive_int_accepts_sinter_style_numbers(text, value):
    assert positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "lots", "1e-3"])
def test_positive_int_refuses_the_rest(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)


@pytest.mark.parametrize("text", ["0", "-1", "inf", "nan", "x"])
def test_positive_float_refuses_non_finite_and_non_positive(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)


def test_dashes_and_underscores_parse_the_same():
    a = parse_args(["launch", "c/", "--max-shots", "1_000", "--circuits-per-job", "6",
                    "--dry-run"])
    b = parse_args(["launch", "c/", "--max_shots", "1_000", "--circuits_per_job", "6",
                    "--dry_run"])
    assert vars(a) == vars(b)
    assert a.max_shots == 1000 and a.circuits_per_job == 6 and a.dry_run


def test_sinter_options_are_checked():
    assert sinter_options(["--count-detection-events", "max_batch_seconds=5"]) == [
        "--count_detection_events", "--max_batch_seconds", "5"]
    for bad in ["--save_resume_filepath=x", "--postselected_observables_predicate=True",
                "--max_batch_size=0", "--count_detection_events=yes", "--metadata_func=auto"]:
        with pytest.raises(KilnError, match="--sinter-option"):
            sinter_options([bad])


@pytest.mark.slow
def test_sinter_option_reaches_sinter_and_the_merged_csv(tmp_path, small_circuits, kiln):
    bucket = tmp_path / "bucket"
    kiln("launch", str(small_circuits), "--max-shots", "3_000", "--max-errors", "30",
         "--bucket", str(bucket), "--jobs", "1", "--name", "combos",
         "--sinter-option=--count_observable_error_combos", check=True)
    out = tmp_path / "merged.csv"
    kiln("merge", "--bucket", str(bucket), "--out", str(out), check=True)
    stats = sinter.read_stats_from_csv_files(str(out))
    assert len(stats) == 4
    assert any(key.startswith("obs_mistake_mask=") for s in stats for key in s.custom_counts)


def test_errors_are_one_line_with_exit_2(tmp_path, kiln):
    r = kiln("launch", str(tmp_path / "missing"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no such folder" in r.stderr
    r = kiln("launch", str(tmp_path), "--max-shots", "zero")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--max-shots" in r.stderr


def test_an_unknown_flag_is_named_by_its_command(tmp_path, kiln):
    """The error names the command whose flags were given (`qec-kiln plan: ...`), in one line;
    `plan --dry-run` says that plan launches nothing anyway."""
    r = kiln("plan", str(tmp_path), "--dry-run")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("qec-kiln plan: error: unrecognized arguments: --dry-run")
    assert "launches nothing already" in r.stderr
    r = kiln("run-batch", "--bucket", "b", "--sweep", "s", "--bogus")
    assert r.returncode == 2 and r.stderr.startswith("qec-kiln run-batch: error: unrecognized "
                                                     "arguments: --bogus")
    r = kiln("merge", "--out", "-", "--bogus", "x")
    assert r.returncode == 2 and "qec-kiln merge: error: unrecognized arguments: --bogus x" in r.stderr


#: The verbs whose module builds on another's (as sinter's collect builds on combine's).
_BUILDS_ON = {"launch": {"plan"}, "watch": {"plot"}, "report": {"plot"}}


def test_each_verb_imports_only_its_own_module():
    """``python -m qec_kiln VERB --help`` imports ``_main_<VERB>.py`` (and what it builds on),
    no other verb's module; one subprocess reports every verb's, each from a fresh import."""
    from qec_kiln._command._main import VERBS

    code = (
        "import contextlib, io, json, sys\n"
        "from qec_kiln._command._main import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main([sys.argv[1], '--help'])\n"
        "print(json.dumps(sorted(m.rsplit('_main_', 1)[1] for m in sys.modules\n"
        "                        if m.startswith('qec_kiln._command._main_'))))\n")
    for verb in VERBS:
        r = subprocess.run([sys.executable, "-c", code, verb], capture_output=True, text=True,
                           timeout=60, check=True)
        mine = verb.replace("-", "_")
        assert set(json.loads(r.stdout)) == {mine} | _BUILDS_ON.get(verb, set()), verb

"""The ``qec-kiln`` command: plan, launch, run-batch, merge, status, cancel.

Every option accepts dashes or sinter-style underscores (``--max-shots`` or ``--max_shots``) and
numbers with underscores (``1_000_000``). A problem the user can fix ends the command with one
line ``error: ...`` naming the file or flag, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Sequence

from qec_kiln import __version__
from qec_kiln._errors import KilnError


class _Parser(argparse.ArgumentParser):
    """argparse with ``--a_b`` aliases for every ``--a-b`` option and one-line errors."""

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*names, *_underscore_aliases(names), **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        plain = group.add_argument
        group.add_argument = lambda *names, **kw: plain(*names, *_underscore_aliases(names), **kw)
        return group

    def error(self, message: str):  # one clear line, not the whole usage
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _underscore_aliases(names: Sequence[str]) -> list[str]:
    """sinter-style spellings of dashed options.

    >>> _underscore_aliases(["--max-shots"])
    ['--max_shots']
    """
    return ["--" + n[2:].replace("-", "_") for n in names if n.startswith("--") and "-" in n[2:]]


def positive_int(text: str) -> int:
    """``1000``, ``1_000_000`` or ``1e6``; refuse zero, negatives and garbage.

    >>> positive_int("1_000_000"), positive_int("1e6")
    (1000000, 1000000)
    """
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not f.is_integer():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        value = int(f)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text!r}")
    return value


#: sinter collect options a sweep may pass through: they change how sinter samples or what it
#: counts, never a task's strong_id (postselection would, so it is not here).
SINTER_OPTIONS = ("--count_detection_events", "--count_observable_error_combos",
                  "--max_batch_size", "--start_batch_size", "--max_batch_seconds")


def sinter_options(values: Sequence[str]) -> list[str]:
    """Check ``--sinter-option`` values; return sinter's argv words.

    >>> sinter_options(["--count_observable_error_combos", "--max_batch_size=1024"])
    ['--count_observable_error_combos', '--max_batch_size', '1024']
    """
    out: list[str] = []
    for value in values:
        flag, _, arg = value.partition("=")
        flag = "--" + flag.lstrip("-").replace("-", "_")
        if flag not in SINTER_OPTIONS:
            raise KilnError(
                f"--sinter-option {value!r} is not allowed; use one of {', '.join(SINTER_OPTIONS)} "
                "(the others are set by qec-kiln or would change strong_ids)"
            )
        takes_value = flag in ("--max_batch_size", "--start_batch_size", "--max_batch_seconds")
        if takes_value:
            try:
                if int(arg) < 1:
                    raise ValueError
            except ValueError:
                raise KilnError(f"--sinter-option {value!r} needs a positive integer, "
                                f"e.g. {flag}=1000") from None
            out += [flag, arg]
        elif arg:
            raise KilnError(f"--sinter-option {value!r}: {flag} takes no value")
        else:
            out.append(flag)
    return out


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("circuits", help="folder of .stim circuits (searched recursively); names like "
                   "d=5,p=0.001,b=X,type=rotated_surface_memory.stim give the metadata")
    p.add_argument("--decoders", nargs="+", default=["pymatching"], metavar="NAME",
                   help="sinter decoders (default: pymatching)")
    p.add_argument("--custom-decoders-module-function", metavar="MODULE:FUNC",
                   help="passed to sinter collect unchanged (e.g. chromobius:sinter_decoders)")
    p.add_argument("--max-shots", type=positive_int, default=1_000_000,
                   help="shots per circuit and decoder (default 1_000_000)")
    p.add_argument("--max-errors", type=positive_int, default=1000,
                   help="stop a circuit after this many logical errors (default 1000)")
    g = p.add_argument_group("partitioning (pick one; default: chosen from the backend)")
    g.add_argument("--jobs", type=positive_int, help="balance into N batches")
    g.add_argument("--target-hours", type=positive_float,
                   help="as many batches as needed so none is predicted to run longer")
    g.add_argument("--circuits-per-job", type=positive_int,
                   help="ceil(circuits / K) batches, balanced by predicted cost")
    g.add_argument("--no-shards", action="store_true",
                   help="never split a big circuit's shots over several batches")
    g.add_argument("--calibrate", action="store_true",
                   help="time a short pilot of every circuit here first (cached by strong_id)")
    g.add_argument("--calibrate-seconds", type=positive_float, default=60.0,
                   help="total time budget of --calibrate (default 60)")
    g.add_argument("--price-per-cpu-hour", type=positive_float, help="for a cost estimate")
    g.add_argument("--price-per-gpu-hour", type=positive_float, help="for a cost estimate")
    p.add_argument("--sinter-option", action="append", default=[], metavar="OPT",
                   help="passed to every sinter collect, e.g. "
                   "--sinter-option=--count_observable_error_combos (repeatable; only options "
                   "that leave strong_ids unchanged: " + ", ".join(SINTER_OPTIONS) + ")")
    p.add_argument("--bucket", default="kiln-results",
                   help="s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or a directory "
                   "(default ./kiln-results)")
    p.add_argument("--name", help="sweep name (default: folder name + digest of the inputs, so "
                   "relaunching the same command resumes the same sweep)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="local", help="local (default), skypilot or slurm")
    p.add_argument("--dry-run", action="store_true",
                   help="show the plan, rendered job files and exact commands; launch nothing")
    p.add_argument("--parallel", type=positive_int, help="local: batches at once")
    p.add_argument("--processes", type=positive_int, help="sinter --processes per batch")
    p.add_argument("--sync-seconds", type=positive_float, default=30.0,
                   help="how often a batch uploads its resume CSV (default 30)")
    s = p.add_argument_group("skypilot")
    s.add_argument("--cpus", help="e.g. 16+ (default from the YAML)")
    s.add_argument("--gpus", help="accelerators, e.g. H100:1 (uses the GPU job YAML, "
                   "configs/sinter_job_gpu.yaml)")
    s.add_argument("--infra", help="e.g. aws, gcp/us-central1, k8s")
    s.add_argument("--no-spot", action="store_true", help="on-demand instead of spot")
    s.add_argument("--yaml", help="your own copy of configs/sinter_job.yaml")
    sl = p.add_argument_group("slurm")
    sl.add_argument("--partition")
    sl.add_argument("--account")
    sl.add_argument("--time", help="time limit per array task, e.g. 04:00:00")
    sl.add_argument("--sbatch-template", help="your own copy of configs/sinter_job.sbatch")
    sl.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                    help="extra #SBATCH option, e.g. --sbatch-option=--qos=long (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qec-kiln",
        description="Run Stim/sinter sweeps on many machines (local, Slurm, SkyPilot) and merge "
        "them into one CSV for `sinter plot`.",
        epilog="typical use: qec-kiln launch circuits/ --dry-run; qec-kiln launch circuits/; "
        "qec-kiln status; qec-kiln merge --out merged.csv",
    )
    parser.add_argument("--version", action="version", version=f"qec-kiln {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan", help="discover and partition circuits; print the plan")
    _add_sweep_args(p)
    p.add_argument("--backend", default="local", help="the plan's defaults depend on it")
    p.add_argument("--processes", type=positive_int, help="sinter processes per batch")
    p.add_argument("--parallel", type=positive_int, help="local: batches at once")
    p.add_argument("--cpus", help="cpus per node, for predicted hours")

    p = sub.add_parser("launch", help="plan, upload and start the sweep's batches")
    _add_sweep_args(p)
    _add_backend_args(p)

    p = sub.add_parser("run-batch", help="run one batch (what a node runs)")
    p.add_argument("--bucket", required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument("--batch", help="batch id, e.g. b003")
    p.add_argument("--batches", help="comma-separated batch ids; --index picks one")
    p.add_argument("--index", help="index into --batches (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--processes", type=positive_int, help="sinter --processes (default: cores)")
    p.add_argument("--sync-seconds", type=positive_float, default=30.0)
    p.add_argument("--work-dir", help="local folder for the resume file (default: temp dir)")

    p = sub.add_parser("merge", help="combine all fragments into one CSV for sinter plot")
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--out", default="merged.csv",
                   help="the merged CSV (default merged.csv), or - for standard output")
    p.add_argument("--sweep", help="only this sweep (default: every sweep in the bucket, combined "
                   "into one CSV with each sweep's share reported)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip damaged fragments with a warning instead of stopping")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="progress of a sweep's batches")
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--sweep", help="default: every sweep in the bucket")
    p.add_argument("--backend", help="default: the one the sweep was launched with")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", help="stop every job of a sweep (fragments are kept)")
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--sweep", required=True)
    p.add_argument("--backend", help="default: the one the sweep was launched with")
    return parser


_COMMAND_MODULES = {"merge": "qec_kiln._merge"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # merge lives apart from _commands: it needs neither rich nor the backends, and starts faster.
    module = importlib.import_module(_COMMAND_MODULES.get(args.command, "qec_kiln._commands"))

    try:
        return getattr(module, "cmd_" + args.command.replace("-", "_"))(args)
    except KilnError as ex:
        msg = str(ex).replace("\n", " ")
        if getattr(args, "json", False):
            print(json.dumps({"error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return ex.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

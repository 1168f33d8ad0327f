"""The ``qec-kiln`` command: plan, launch, run-batch, merge, status, cancel.

Every option accepts dashes or sinter-style underscores (``--max-shots`` or ``--max_shots``) and
numbers with underscores (``1_000_000``). A problem the user can fix ends the command with one
line ``error: ...`` naming the file or flag, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from qec_kiln._argtypes import (
    SINTER_OPTIONS,
    positive_float,
    positive_int,
    processes,
    sinter_options,
    sync_seconds,
)
from qec_kiln._errors import Exit, KilnError
from qec_kiln._version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse with ``--a_b`` aliases for every ``--a-b`` option and one-line errors."""

    commands: dict[str, argparse.ArgumentParser] = {}  # the subcommands' parsers, by name

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*names, *_underscore_aliases(names), **kwargs)

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        plain = group.add_argument
        group.add_argument = (  # type: ignore[method-assign]
            lambda *names, **kw: plain(*names, *_underscore_aliases(names), **kw))
        return group

    def error(self, message: str):  # one clear line, not the whole usage
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _underscore_aliases(names: Sequence[str]) -> list[str]:
    """sinter-style spellings of dashed options.

    >>> _underscore_aliases(["--max-shots"])
    ['--max_shots']
    """
    return ["--" + n[2:].replace("-", "_") for n in names if n.startswith("--") and "-" in n[2:]]


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The flags of a SweepSpec: each flag's dest is its setting's name (``--max-shots`` is
    ``max_shots``), and an absent flag takes the spec's default (shown in the help)."""
    from qec_kiln._sweep.spec import SweepSpec

    default = SweepSpec.defaults()
    keep = argparse.SUPPRESS  # absent: not in the namespace, so the spec's default applies
    p.add_argument("circuits", nargs="*", metavar="DIR_OR_FILES",
                   help="folders of .stim circuits (searched recursively), .stim files or glob "
                   "patterns; names like d=5,p=0.001,b=X,type=rotated_surface_memory.stim give "
                   "the metadata")
    p.add_argument("--circuits", nargs="+", dest="circuits_opt", metavar="DIR_OR_FILES",
                   help="the same, spelled as in `sinter collect --circuits`")
    p.add_argument("--decoders", nargs="+", default=keep, metavar="NAME",
                   help=f"sinter decoders (default: {' '.join(default['decoders'])})")
    p.add_argument("--custom-decoders-module-function", default=keep, metavar="MODULE:FUNC",
                   help="passed to sinter collect unchanged (e.g. chromobius:sinter_decoders)")
    p.add_argument("--max-shots", type=positive_int, default=keep,
                   help=f"shots per circuit and decoder (default {default['max_shots']:_})")
    p.add_argument("--max-errors", type=positive_int, default=keep,
                   help=f"stop a circuit after this many logical errors (default "
                   f"{default['max_errors']})")
    p.add_argument("--existing-data", "--existing-data-filepaths", nargs="+", default=keep,
                   metavar="CSV", help="sinter CSVs from elsewhere (e.g. a workstation's "
                   "`sinter collect`) whose rows count toward the targets, as sinter's "
                   "--existing_data_filepaths; rows the bucket already holds count without it")
    p.add_argument("--merge-existing-data", action="store_true", default=keep,
                   help="also import the --existing-data rows into the bucket (once, as a "
                   "read-only sweep import-HASH) so that merge includes them")
    p.add_argument("--fresh", action="store_true", default=keep,
                   help="count no existing rows; refused where the bucket holds rows of these "
                   "tasks (a merge would add them): give a new --bucket")
    g = p.add_argument_group("partitioning (pick one; default: chosen from the backend)")
    g.add_argument("--jobs", type=positive_int, default=keep, help="balance into N batches")
    g.add_argument("--target-hours", type=positive_float, default=keep,
                   help="as many batches as needed so none is predicted to run longer")
    g.add_argument("--circuits-per-job", type=positive_int, metavar="N", default=keep,
                   help="ceil(tasks / N) batches, a task being one circuit x decoder, balanced "
                   "by predicted cost")
    g.add_argument("--no-shards", action="store_false", dest="shards", default=keep,
                   help="never split a big circuit's shots over several batches")
    g.add_argument("--calibrate", action="store_true", default=keep,
                   help="time a short pilot of every circuit here first (cached by strong_id)")
    g.add_argument("--calibrate-seconds", type=positive_float, default=keep,
                   help=f"total time budget of --calibrate (default "
                   f"{default['calibrate_seconds']:g})")
    g.add_argument("--price-per-cpu-hour", type=positive_float, default=keep,
                   help="for a cost estimate")
    g.add_argument("--price-per-gpu-hour", type=positive_float, default=keep,
                   help="for a cost estimate")
    g = p.add_argument_group("postselection and counts (sinter collect's flags, passed to "
                             "every batch; the masks enter strong_ids exactly as in sinter)")
    g.add_argument("--postselected-detectors-predicate", default=keep, metavar="EXPR",
                   help="discard a shot when a detector for which EXPR(index, metadata, coords) "
                   "is true fires, e.g. \"coords[3] > 0\"")
    g.add_argument("--postselected-observables-predicate", default=keep, metavar="EXPR",
                   help="discard a shot, instead of counting an error, when the decoder "
                   "mispredicts an observable for which EXPR(index, metadata) is true")
    g.add_argument("--postselect-detectors-with-non-zero-4th-coord", action="store_true",
                   default=keep, help="discard a shot when a detector with a non-zero 4th "
                   "coordinate fires")
    g.add_argument("--custom-error-count-key", default=keep, metavar="KEY",
                   help="--max-errors counts custom_counts[KEY] instead of errors (e.g. "
                   "detection_events with --sinter-option=--count_detection_events); merge and "
                   "status judge targets by it too")
    p.add_argument("--sinter-option", action="append", dest="sinter_options", default=keep,
                   metavar="OPT",
                   help="passed to every sinter collect, e.g. "
                   "--sinter-option=--count_observable_error_combos (repeatable; only options "
                   "that leave strong_ids unchanged: " + ", ".join(SINTER_OPTIONS) + ")")
    p.add_argument("--bucket", default=keep,
                   help="s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or a directory "
                   f"(default ./{default['bucket']})")
    p.add_argument("--name", default=keep, help="sweep name (default: folder name + digest of "
                   "the inputs, so relaunching the same command resumes the same sweep)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_backend_args(p: argparse.ArgumentParser, what: str) -> None:
    from qec_kiln._backends import BACKENDS
    from qec_kiln._backends import add_arguments as add_backend_arguments

    p.add_argument("--backend", default="local",
                   help=f"{', '.join(BACKENDS)} (default local); {what}")
    add_backend_arguments(p)  # each backend's light options module only


def _add_run_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument("--batch", help="batch id, e.g. b003")
    p.add_argument("--batches", help="comma-separated batch ids; --index picks one")
    p.add_argument("--index", help="index into --batches (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--all", action="store_true",
                   help="run every batch of --batches here (batches that share no task in one "
                   "sinter, each with its own fragment: what a local worker does)")
    p.add_argument("--processes", type=processes, metavar="N|auto",
                   help="sinter --processes (default auto: one per allowed CPU)")
    p.add_argument("--cpus-allowed", metavar="LIST",
                   help="CPUs sinter may use, e.g. 0-3 (default: this process's affinity mask)")
    p.add_argument("--sync-seconds", type=sync_seconds, default=30.0)
    p.add_argument("--work-dir", help="local folder for the resume file (default: temp dir)")
    p.add_argument("--lease-seconds", type=positive_float,
                   help="the batch's lease lasts this long unless renewed; a dead runner's batch "
                        "may be taken over after it (default: 4 sync periods, at least 60)")


def run_batch_parser() -> _Parser:
    """``qec-kiln run-batch``'s parser alone: a node's run-batch builds no other command's flags
    (they import the backends' option modules and the views')."""
    p = _Parser(prog="qec-kiln run-batch", description="run one batch (what a node runs)")
    _add_run_batch_args(p)
    p.set_defaults(command="run-batch")
    return p


MERGE_HELP = "combine all fragments into one CSV for sinter plot"


def _add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--out", default="merged.csv",
                   help="the merged CSV (default merged.csv), or - for standard output")
    p.add_argument("--sweep", help="only this sweep (default: every sweep in the bucket, combined "
                   "into one CSV with each sweep's share reported)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip damaged fragments with a warning instead of stopping")
    p.add_argument("--json", action="store_true")


LAUNCH_HELP = "plan, upload and start the sweep's batches"


def _add_launch_args(p: argparse.ArgumentParser) -> None:
    _add_sweep_args(p)
    _add_backend_args(p, "where the batches run")
    p.add_argument("--dry-run", action="store_true",
                   help="show the plan, rendered job files and exact commands; launch nothing")


def launch_parser() -> _Parser:
    """``qec-kiln launch``'s parser alone: a launch builds no other command's flags (a local
    sweep of little work starts that much sooner)."""
    p = _Parser(prog="qec-kiln launch", description=LAUNCH_HELP)
    _add_launch_args(p)
    p.set_defaults(command="launch")
    return p


def merge_parser() -> _Parser:
    """``qec-kiln merge``'s parser alone: a merge, like ``sinter combine``, starts without
    building the other commands' flags (they import the sweep settings, the backends' option
    modules and the views')."""
    p = _Parser(prog="qec-kiln merge", description=MERGE_HELP)
    _add_merge_args(p)
    p.set_defaults(command="merge")
    return p


def build_parser() -> _Parser:
    """The ``qec-kiln`` parser (it imports no backend: each one's flags are in its light
    ``options`` module)."""
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
    _add_backend_args(p, "the plan's defaults depend on it")

    _add_launch_args(sub.add_parser("launch", help=LAUNCH_HELP))

    _add_run_batch_args(sub.add_parser("run-batch", help="run one batch (what a node runs)"))

    _add_merge_args(sub.add_parser("merge", help=MERGE_HELP))

    p = sub.add_parser("status", help="progress of a sweep's batches")
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--sweep", help="default: every sweep in the bucket")
    p.add_argument("--backend", help="default: the one the sweep was launched with")
    p.add_argument("--json", action="store_true", help="every batch, machine-readable")
    p.add_argument("--rows", type=positive_int, default=40, metavar="N",
                   help="batches the table shows, failed, running and unfinished ones first; "
                   "one line counts the rest (default 40; the totals count every batch)")
    p.add_argument("--all", action="store_true", help="a row for every batch")

    p = sub.add_parser("cancel", help="stop every job of a sweep (fragments are kept)")
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--sweep", help="default: the bucket's only sweep (several need --all)")
    p.add_argument("--all", action="store_true", help="cancel every sweep in the bucket")
    p.add_argument("--backend", help="default: the one the sweep was launched with")

    p = sub.add_parser("remove", help="delete a sweep from the bucket (manifest, circuits, "
                       "fragments, leases, logs); refused while its batches run")
    p.add_argument("--bucket", default="kiln-results")
    p.add_argument("--sweep", required=True, help="the sweep to remove")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--backend", help="default: the one the sweep was launched with")

    p = sub.add_parser("pool", help="SkyPilot pools of warm workers (--backend skypilot "
                       "--workers K): show them, or take them down (idle workers bill)")
    p.add_argument("action", choices=("status", "down"))
    p.add_argument("name", nargs="?", help="the pool (default: every kiln-pool-* pool)")
    p.add_argument("--pool", dest="pool_opt", metavar="NAME", help="the same as NAME")
    p.add_argument("--backend", help="the backend whose pools (default: the one backend "
                   "with pools)")

    p = sub.add_parser("clean", help="remove old local state (job records, work folders) under "
                       "$QEC_KILN_HOME, default ~/.cache/qec-kiln; buckets are not touched")
    p.add_argument("--older-than", type=float, default=7.0, metavar="DAYS",
                   help="only sweeps untouched for this many days (default 7; 0: all that are "
                   "not running)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")

    from qec_kiln._view import cli as view_cli

    view_cli.add_parsers(sub, _Parser)  # watch, plot, report
    parser.commands = dict(sub.choices)
    return parser


def _join_sinter_options(argv: Sequence[str]) -> list[str]:
    """``--sinter-option --flag`` as ``--sinter-option=--flag`` (argparse would take ``--flag``
    for an option of its own).

    >>> _join_sinter_options(["--sinter-option", "--count_detection_events", "--jobs", "2"])
    ['--sinter-option=--count_detection_events', '--jobs', '2']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("--sinter-option", "--sinter_option") and i + 1 < len(argv) \
                and argv[i + 1].startswith("-"):
            out.append(f"{word}={argv[i + 1]}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


#: Commands that live apart from _commands: the views of a bucket (watch, plot, report), and
#: run-batch, which needs neither rich, the API nor the backends and starts sinter sooner.
_COMMAND_MODULES = {"watch": "qec_kiln._view.cli", "plot": "qec_kiln._view.cli",
                    "report": "qec_kiln._view.cli", "run-batch": "qec_kiln._node.entry"}


def main(argv: Sequence[str] | None = None) -> int:
    words = _join_sinter_options(sys.argv[1:] if argv is None else list(argv))
    if words[:1] == ["run-batch"]:  # what every node runs: only its own flags
        parser, words = run_batch_parser(), words[1:]
    elif words[:1] == ["merge"]:  # as quick to start as `sinter combine`: only its own flags
        parser, words = merge_parser(), words[1:]
    elif words[:1] == ["launch"]:
        parser, words = launch_parser(), words[1:]
    else:
        parser = build_parser()
    args, extra = parser.parse_known_args(words)
    if extra:  # named by the command's own parser, not the top one
        command = parser.commands.get(getattr(args, "command", None) or "", parser)
        hint = ""
        if args.command == "plan" and {"--dry-run", "--dry_run"} & set(extra):
            hint = ("; plan uploads and launches nothing already (`qec-kiln launch ... "
                    "--dry-run` also shows the job files)")
        command.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.command in ("plan", "launch"):
        args.circuits = list(args.circuits) + list(args.circuits_opt or [])
        if not args.circuits:
            parser.commands.get(args.command, parser).error(
                "no circuits: give a folder of .stim files, .stim files, or "
                "--circuits DIR_OR_FILES...")
    # _commands loads rich only when it prints a table: merge and cancel start without it.
    module = importlib.import_module(_COMMAND_MODULES.get(args.command, "qec_kiln._commands"))

    try:
        return getattr(module, "cmd_" + args.command.replace("-", "_"))(args)
    except BrokenPipeError:  # `qec-kiln status --json | head -1`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit flush does not fail again
        return Exit.BROKEN_PIPE
    except KilnError as ex:
        msg = str(ex).replace("\n", " ")
        if getattr(args, "json", False):
            print(json.dumps({"error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return ex.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Exit.for_signal(2)


__all__ = ["SINTER_OPTIONS", "build_parser", "main", "merge_parser", "positive_float", "positive_int",
           "run_batch_parser", "sinter_options"]


if __name__ == "__main__":
    sys.exit(main())

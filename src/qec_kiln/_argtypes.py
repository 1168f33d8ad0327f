"""Checks of command-line values shared by the CLI, the Python API and the backends' flags.

>>> positive_int("1_000_000"), positive_int("1e6"), positive_float("0.5")
(1000000, 1000000, 0.5)
>>> processes("auto"), processes("4"), sync_seconds("0.5")
(None, 4, 0.5)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from qec_kiln._errors import KilnError


def positive_int(text: str) -> int:
    """``1000``, ``1_000_000`` or ``1e6``; refuse zero, negatives and garbage."""
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


def processes(text: str) -> int | None:
    """``--processes``: a positive integer, or ``auto`` (as in ``sinter collect``) for the
    default (the cores the batch gets)."""
    if text.strip().lower() == "auto":
        return None
    return positive_int(text)


#: The bucket every command reads and writes when none is given (a folder here).
DEFAULT_BUCKET = "kiln-results"

#: How often a batch uploads the complete lines of its resume CSV, in seconds, by default.
SYNC_SECONDS = 30.0

#: The longest sync period: one day (a longer wait overflows Python's timers).
MAX_SYNC_SECONDS = 86_400.0


def sync_seconds(text: str) -> float:
    """``--sync-seconds``: positive, finite and at most one day.

    >>> sync_seconds("1e10")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be at most 86400 (one day), got '1e10'
    """
    value = positive_float(text)
    if value > MAX_SYNC_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SYNC_SECONDS:g} (one day), got {text!r}")
    return value


#: sinter collect options a sweep may pass through: they change how sinter samples or what it
#: counts, never a task's strong_id (postselection would, so it is not here).
SINTER_OPTIONS = ("--count_detection_events", "--count_observable_error_combos",
                  "--max_batch_size", "--start_batch_size", "--max_batch_seconds")


#: sinter collect flags that are qec-kiln settings of their own (with dashes).
FIRST_CLASS = {f"--{n}": "--" + n.replace("_", "-") for n in (
    "postselected_detectors_predicate", "postselected_observables_predicate",
    "postselect_detectors_with_non_zero_4th_coord", "custom_error_count_key")}
FIRST_CLASS["--postselection_mask_func"] = (  # in the issue, but no such flag in sinter 1.16
    "--postselected-detectors-predicate (sinter 1.16 has no --postselection_mask_func)")


def sinter_options(values: Sequence[str]) -> list[str]:
    """Check ``--sinter-option`` values; return sinter's argv words.

    >>> sinter_options(["--count_observable_error_combos", "--max_batch_size=1024"])
    ['--count_observable_error_combos', '--max_batch_size', '1024']
    """
    out: list[str] = []
    for value in values:
        flag, _, arg = value.partition("=")
        flag = "--" + flag.lstrip("-").replace("-", "_")
        if flag == "--existing_data_filepaths":
            raise KilnError(
                f"--sinter-option {value!r}: give the files as --existing-data CSV... (their rows "
                "count toward the targets, as in sinter; --merge-existing-data also merges them)")
        if flag in FIRST_CLASS:
            raise KilnError(f"--sinter-option {value!r}: give it as qec-kiln's own flag "
                            f"{FIRST_CLASS[flag]} (it changes strong_ids or targets, which "
                            "qec-kiln computes with it)")
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

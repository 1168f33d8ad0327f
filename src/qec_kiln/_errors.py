"""The exception the CLI turns into one clear line, every exit code qec-kiln gives, and
``Log``: where a step's lines for the user go.

    >>> int(Exit.USAGE), int(Exit.CONFLICT), Exit.for_signal(2), int(Exit.CANCELLED)
    (2, 3, 130, 4)
"""

from __future__ import annotations

import enum
from collections.abc import Callable

#: Where a step's lines for the user go (``print``, a logger's method, or a test's list.append).
Log = Callable[[str], None]


class Exit(enum.IntEnum):
    """qec-kiln's exit codes, in one table (the commands, run-batch on a node, the local backend).

    ``CANCELLED`` (a launch stopped by ``qec-kiln cancel``) is not 130: 130 is Ctrl-C, as
    ``128 + SIGINT`` for every signal (``for_signal``).
    """

    OK = 0
    FAILED = 1  # a batch failed (launch), or a command failed in a way that is not the user's
    USAGE = 2  # a KilnError: a problem the user can fix, named in one line
    CONFLICT = 3  # run-batch: another runner holds the batch's lease (its work is not lost)
    CANCELLED = 4  # launch: stopped by `qec-kiln cancel`; launch again to resume
    UPLOAD_FAILED = 75  # run-batch: the final upload failed (EX_TEMPFAIL; a new node may succeed)
    SIGNAL_BASE = 128  # 128 + n: stopped by signal n (130: Ctrl-C, 143: SIGTERM)
    BROKEN_PIPE = 141  # the reader of our output left (`qec-kiln status | head -1`)

    @staticmethod
    def for_signal(signum: int) -> int:
        """The code of a command stopped by signal ``signum`` (as a shell reports it)."""
        return int(Exit.SIGNAL_BASE) + int(signum)


class KilnError(Exception):
    """A problem the user can fix: the message names the culprit and what to do.

    Example:
        >>> raise KilnError("circuits/bad.stim: not a valid stim circuit (line 3); fix or remove it")
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: circuits/bad.stim: not a valid stim circuit (line 3); fix or remove it
    """

    exit_code: int = Exit.USAGE


class StorageError(KilnError):
    """The bucket could not be read or written (bad URL, credentials, endpoint, missing object)."""


class ObjectNotFound(StorageError):
    """The object does not exist in the bucket."""


class PreconditionFailed(StorageError):
    """A conditional write found another version of the object than the one it was given
    (someone else created or replaced it first)."""


class KilnWarning(UserWarning):
    """What the command prints as ``warning: ...``, from the Python API when no ``log`` is given
    (e.g. ``jobs=`` ignored by a sweep's stored plan): filter it like any warning."""

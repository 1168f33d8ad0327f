"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations


class KilnError(Exception):
    """A problem the user can fix: the message names the culprit and what to do.

    Example:
        >>> raise KilnError("circuits/bad.stim: not a valid stim circuit (line 3); fix or remove it")
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: circuits/bad.stim: not a valid stim circuit (line 3); fix or remove it
    """

    exit_code: int = 2


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

"""Why a batch failed, in one line: the last error line of its log (``<sweep>/logs/<batch>.log``
in the bucket, or a local batch's own log), for ``launch`` and ``status`` to print.

    >>> last_error_line('''[10:00:01] b000: sinter collect: 1 circuit(s)
    ... Traceback (most recent call last):
    ...   File "x.py", line 3, in <module>
    ... ValueError: Expected all detectors to have at least 4 coordinates
    ... [10:00:02] b000: final upload done: 0 bytes''')
    'ValueError: Expected all detectors to have at least 4 coordinates'
    >>> last_error_line("[10:00:01] b000: error: another run-batch holds it")
    'error: another run-batch holds it'
    >>> last_error_line("all fine") is None
    True
"""

from __future__ import annotations

import re

from qec_kiln._errors import StorageError
from qec_kiln._storage import QUICK_RETRY, Bucket
from qec_kiln._sweep.manifest import log_key

#: An exception line of a Python traceback (``ValueError: ...``, ``sinter.X.YError``, ``KeyboardInterrupt``).
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt|Exit)\b(?::.*)?$")
#: run-batch's own error lines: ``[12:00:00] b003: error: ...``.
_KILN_ERROR = re.compile(r"^(?:\[[\d:]+\] [\w.-]+: )?(error: .+)$")
#: The most characters of a log line shown.
MAX_LINE = 300


def last_error_line(text: str) -> str | None:
    """The last exception line of a traceback in ``text`` (what went wrong, not where), else
    its last ``error: ...`` line, else None."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern, group in ((_EXCEPTION, 0), (_KILN_ERROR, 1)):
        for line in reversed(lines):
            if (m := pattern.match(line)) is not None:
                found = m.group(group)
                if group == 1 and found.startswith("error: sinter collect exited with"):
                    continue  # its traceback (the line above) says why
                return found[:MAX_LINE] + ("..." if len(found) > MAX_LINE else "")
    return None


def batch_error(bucket: Bucket, sweep: str, batch: str) -> str | None:
    """The last error line of the batch's log in the bucket (None: no log, or no error in it)."""
    try:
        data = bucket.read_bytes(log_key(sweep, batch), retry=QUICK_RETRY)
    except StorageError:
        return None
    return last_error_line(data.decode("utf-8", "replace"))


__all__ = ["batch_error", "last_error_line"]

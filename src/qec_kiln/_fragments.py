"""Reading and checking fragments: a batch's sinter resume CSV as stored in the bucket.

Parsing is sinter's own (``sinter.CSV_HEADER`` and ``ExistingData.from_file``); this module only
cuts a fragment back to its last complete line and turns sinter's parse errors into one clear
line naming the fragment.

Example:
    >>> import sinter
    >>> complete_lines((sinter.CSV_HEADER + "\\n12,3").encode())
    b'     shots,    errors,  discards, seconds,decoder,strong_id,json_metadata,custom_counts\\n'
"""

from __future__ import annotations

import dataclasses
import io

import sinter

from qec_kiln._errors import KilnError

HEADER_LINE = (sinter.CSV_HEADER + "\n").encode()


def complete_lines(data: bytes) -> bytes:
    """``data`` cut back to (and including) its last newline."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


@dataclasses.dataclass
class Fragment:
    """A parsed fragment: the clean bytes, sinter's stats per strong_id, and what was dropped."""

    name: str
    clean: bytes
    stats: dict[str, sinter.TaskStats]
    dropped_bytes: int = 0

    @property
    def warning(self) -> str | None:
        if self.dropped_bytes:
            return f"{self.name}: dropped a truncated last line ({self.dropped_bytes} bytes)"
        return None


def parse_fragment(data: bytes, name: str) -> Fragment:
    """Check and parse a fragment; raise KilnError naming it when it is not a sinter CSV.

    An empty object is an empty fragment. A truncated last line is dropped (and reported in
    ``warning``); anything else that sinter cannot read is an error.
    """
    clean = complete_lines(data)
    dropped = len(data) - len(clean)
    if not clean.strip():
        if data.strip() and not HEADER_LINE.startswith(data.strip()):
            raise KilnError(
                f"{name}: not a sinter CSV (no header line); move it out of fragments/ or delete it"
            )
        return Fragment(name=name, clean=b"", stats={}, dropped_bytes=0)
    first = clean.split(b"\n", 1)[0] + b"\n"
    if first.replace(b" ", b"") != HEADER_LINE.replace(b" ", b""):
        shown = first[:60].decode("utf-8", "replace").strip()
        raise KilnError(
            f"{name}: not a sinter resume CSV (header {shown!r} is not sinter's "
            f"{sinter.CSV_HEADER.strip()[:40]!r}...); move it out of fragments/ or delete it"
        )
    try:
        text = clean.decode("utf-8")
        rows = sinter.read_stats_from_csv_files(io.StringIO(text))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as ex:
        line = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise KilnError(
            f"{name}: a row is not valid sinter CSV ({line[:120]}); the fragment is damaged: "
            "move it out of fragments/ to rerun that batch"
        ) from ex
    return Fragment(name=name, clean=clean, stats={r.strong_id: r for r in rows}, dropped_bytes=dropped)

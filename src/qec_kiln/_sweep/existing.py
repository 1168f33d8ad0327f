"""Rows that already exist for a sweep's tasks, and what is left of the targets after them.

``sinter collect`` counts the rows of its resume file (and of ``--existing_data_filepaths``)
toward ``--max_shots`` and ``--max_errors``: a task stops when its shots reach max_shots OR its
errors reach max_errors, old rows and new together. A qec-kiln sweep does the same with the
rows the bucket already holds (other sweeps of it) and the rows of ``--existing-data`` CSVs: each
task is planned only what is left, ``max_shots - shots`` and ``max_errors - errors``, and none
when either is used up (:func:`remaining_targets`).

Example:
    >>> import sinter
    >>> rows = ExistingRows()
    >>> rows.add("sweep-a", sinter.TaskStats(strong_id="x", decoder="pymatching",
    ...                                      json_metadata={}, shots=2000, errors=20))
    >>> remaining_targets(["x", "y"], 10_000, 200, rows)
    {'x': (8000, 180), 'y': (10000, 200)}
    >>> remaining_targets(["x"], 2000, 200, rows)  # max_shots reached: nothing left
    {}
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Iterable, Mapping

import sinter

from qec_kiln._errors import KilnError

#: Prefix of the sweeps that hold imported --existing-data rows (``import-<8 hex>``).
IMPORT_PREFIX = "import-"


@dataclasses.dataclass
class ExistingRows:
    """Per strong_id: the rows' sum (sinter's TaskStats addition) and each source's shots."""

    stats: dict[str, sinter.TaskStats] = dataclasses.field(default_factory=dict)
    sources: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def add(self, source: str, st: sinter.TaskStats) -> None:
        sid = st.strong_id
        self.stats[sid] = self.stats[sid] + st if sid in self.stats else st
        mine = self.sources.setdefault(sid, {})
        mine[source] = mine.get(source, 0) + st.shots

    def merged(self, other: ExistingRows) -> ExistingRows:
        out = ExistingRows()
        for rows in (self, other):
            for sid, st in rows.stats.items():
                out.stats[sid] = out.stats[sid] + st if sid in out.stats else st
                for source, shots in rows.sources.get(sid, {}).items():
                    out.sources.setdefault(sid, {})[source] = shots
        return out

    def to_manifest(self, error_key: str | None = None) -> dict[str, dict]:
        """What a manifest records as counted (``Manifest.existing``); ``errors`` is what
        max_errors counts (with ``error_key``, sinter's ``--custom_error_count_key``, that
        custom count)."""
        return {sid: {"shots": st.shots, "errors": errors_of(st, error_key),
                      "discards": st.discards,
                      "seconds": st.seconds, "from": dict(self.sources.get(sid, {}))}
                for sid, st in sorted(self.stats.items())}


def errors_of(st: sinter.TaskStats, error_key: str | None = None) -> int:
    """What ``--max-errors`` counts in ``st``: its errors, or with ``error_key`` (sinter's
    ``--custom_error_count_key``) that custom count, as sinter collect counts a resume file."""
    return int(st.custom_counts.get(error_key, 0)) if error_key else int(st.errors)


def remaining_targets(strong_ids: Iterable[str], max_shots: int, max_errors: int,
                      existing: ExistingRows, error_key: str | None = None,
                      own: Mapping[str, tuple[int, int]] | None = None
                      ) -> dict[str, tuple[int, int]]:
    """(shots, errors) left of the targets per task, after its existing rows; a task whose
    shots or errors already reach their target is done and left out (as sinter stops it).
    With ``error_key`` the errors are that custom count (``--custom-error-count-key``).
    ``own``: a task's own (max_shots, max_errors) by strong_id, instead of the two given
    (sinter's per-task ``collection_options``).

    >>> remaining_targets(["x", "y"], 100, 10, ExistingRows(), own={"y": (5, 1)})
    {'x': (100, 10), 'y': (5, 1)}
    """
    out = {}
    for sid in strong_ids:
        st = existing.stats.get(sid)
        ms, me = (own or {}).get(sid, (max_shots, max_errors))
        shots, errors = (ms - st.shots, me - errors_of(st, error_key)) if st else (ms, me)
        if shots > 0 and errors > 0:
            out[sid] = (shots, errors)
    return out


@dataclasses.dataclass
class ExistingFile:
    """One --existing-data CSV: its rows of the sweep's tasks (each line as written, for an
    import), and how many rows it held of other tasks."""

    path: str
    sha256: str
    lines: list[str]  # the CSV rows of the sweep's tasks, as in the file
    stats: list[sinter.TaskStats]  # their sums per strong_id
    other_rows: int


def read_existing_file(path: str, strong_ids: Mapping[str, str]) -> ExistingFile:
    """Read a sinter CSV (``sinter collect`` / ``sinter combine`` output) and keep the rows of
    the tasks in ``strong_ids`` (strong_id -> a name for messages). One line when the file is
    missing or damaged, or when none of its rows is of these tasks."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as ex:
        raise KilnError(f"--existing-data {path}: cannot read it ({ex.strerror or ex})") from None
    try:
        text = data.decode("utf-8")
        rows = csv_rows(text)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as ex:
        line = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
        raise KilnError(f"--existing-data {path}: not a readable sinter CSV ({line[:120]}); "
                        "give a file written by `sinter collect` or `sinter combine`") from None
    mine = [(line, st) for line, st in rows if st.strong_id in strong_ids]
    if rows and not mine:
        raise KilnError(
            f"--existing-data {path}: none of its {len(rows)} row(s) is of a task of this sweep "
            "(no strong_id matches: were they collected from the same circuits and decoders, "
            "with `sinter collect --metadata_func auto`?)")
    if not rows:
        raise KilnError(f"--existing-data {path}: the file holds no rows")
    sums: dict[str, sinter.TaskStats] = {}
    for _, st in mine:
        sums[st.strong_id] = sums[st.strong_id] + st if st.strong_id in sums else st
    return ExistingFile(path=os.fspath(path), sha256=hashlib.sha256(data).hexdigest(),
                        lines=[line for line, _ in mine], stats=list(sums.values()),
                        other_rows=len(rows) - len(mine))


def csv_rows(text: str) -> list[tuple[str, sinter.TaskStats]]:
    """Each row of a sinter CSV with its line (sinter's parser, one row at a time).

    >>> row = sinter.TaskStats(strong_id="x", decoder="d", json_metadata=None, shots=5)
    >>> [st.shots for _, st in csv_rows(sinter.CSV_HEADER + chr(10) + row.to_csv_line())]
    [5]
    """
    lines = text.splitlines()
    if not lines or lines[0].replace(" ", "") != sinter.CSV_HEADER.replace(" ", ""):
        raise ValueError(f"its first line is not sinter's header {sinter.CSV_HEADER.strip()[:40]!r}...")
    out = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            (st,) = sinter.read_stats_from_csv_files(io.StringIO(f"{sinter.CSV_HEADER}\n{line}\n"))
        except (ValueError, KeyError, TypeError) as ex:
            raise ValueError(f"line {number}: {str(ex).strip()[:80] or type(ex).__name__}") from ex
        out.append((line.rstrip(), st))
    return out


def import_name(lines: Iterable[str]) -> str:
    """The name of the sweep that holds imported rows: ``import-`` and 8 hex of the rows.

    >>> import_name(["a", "b"])
    'import-7e18f737'
    """
    return IMPORT_PREFIX + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:8]


__all__ = ["IMPORT_PREFIX", "ExistingFile", "ExistingRows", "csv_rows", "import_name",
           "errors_of", "read_existing_file", "remaining_targets"]

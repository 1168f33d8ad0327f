"""The rows of a running sweep as they reach the bucket: each batch's fragment only grows (it is
overwritten whole with a longer prefix of its resume file), so the bytes past what was read
last time are the rows that landed since, each a ``sinter.TaskStats`` row as sinter wrote it.
"""

from __future__ import annotations

import time

import sinter

from qec_kiln._errors import ObjectNotFound, StorageError
from qec_kiln._report.units import duration
from qec_kiln._storage import Bucket
from qec_kiln._sweep.existing import csv_rows
from qec_kiln._sweep.fragments import HEADER_LINE, complete_lines
from qec_kiln._sweep.manifest import Manifest, fragment_key
from qec_kiln._sweep.progress import share_of_targets


class FragmentWatcher:
    """Reads a sweep's fragments again and again; :meth:`poll` returns the new rows."""

    def __init__(self, bucket: Bucket, manifest: Manifest, old: dict[str, int] | None = None):
        """``old``: each batch's bytes from before this launch (a resumed sweep's rows: not
        new, but counted in the status)."""
        self.bucket = bucket
        self.manifest = manifest
        self.read: dict[str, int] = {}  # batch -> bytes of it already returned
        self.totals: dict[str, sinter.TaskStats] = {}  # strong_id -> rows returned so far
        self.targets = manifest.plan.task_targets()
        self.began = time.monotonic()
        if old:
            self.poll(old)

    def poll(self, upto: dict[str, int] | None = None) -> list[tuple[str, sinter.TaskStats]]:
        """The rows (line, stats) that reached the bucket since the last poll (``upto``: only
        that many bytes of each batch's fragment)."""
        out: list[tuple[str, sinter.TaskStats]] = []
        for b in self.manifest.batches:
            if upto is not None and not upto.get(b.id):
                continue
            try:
                data = complete_lines(self.bucket.read_bytes(
                    fragment_key(self.manifest.sweep, b.id)))
            except (ObjectNotFound, StorageError):
                continue  # not uploaded yet (or unreadable this instant): the next poll
            if upto is not None:
                data = data[:upto[b.id]]
            start = self.read.get(b.id, 0)
            if len(data) <= start:
                continue
            new = data[start:].decode("utf-8", "replace")
            if start == 0 and data.split(b"\n", 1)[0].replace(b" ", b"") == \
                    HEADER_LINE.strip().replace(b" ", b""):
                new = new.split("\n", 1)[1] if "\n" in new else ""
            try:
                rows = csv_rows(sinter.CSV_HEADER + "\n" + new)
            except ValueError:
                continue  # replaced while read: the next poll
            self.read[b.id] = len(data)
            for _, st in rows:
                had = self.totals.get(st.strong_id)
                self.totals[st.strong_id] = had + st if had is not None else st
            out += rows
        return out

    def status_message(self) -> str:
        """Tasks left, shots and errors so far, and a rough ETA (sinter's status, in short)."""
        shares = []
        for sid, (ms, me) in self.targets.items():
            st = self.totals.get(sid)
            shares.append(0.0 if st is None else
                          min(1.0, share_of_targets(st.shots, self.manifest.errors_of(st), ms, me)))
        left = sum(1 for s in shares if s < 1)
        shots = sum(st.shots for st in self.totals.values())
        errors = sum(self.manifest.errors_of(st) for st in self.totals.values())
        done = sum(shares) / len(shares) if shares else 1.0
        spent = time.monotonic() - self.began
        eta = duration(spent * (1 - done) / done) if 0 < done < 1 else "?" if done < 1 else "0 s"
        return (f"sweep {self.manifest.sweep}: {left} task(s) left of {len(shares)}, "
                f"{shots:,} shots, {errors:,} errors, ETA {eta}")


def fragment_sizes(bucket: Bucket, manifest: Manifest) -> dict[str, int]:
    """Each batch's fragment's bytes of complete lines now (0: none yet)."""
    out = {}
    for b in manifest.batches:
        try:
            out[b.id] = len(complete_lines(bucket.read_bytes(fragment_key(manifest.sweep, b.id))))
        except (ObjectNotFound, StorageError):
            out[b.id] = 0
    return out


__all__ = ["FragmentWatcher", "fragment_sizes"]

"""``qec-kiln clean``: remove old local state under ``$QEC_KILN_HOME`` (default
``~/.cache/qec-kiln``): the local backend's job records and work folders, and the rendered Slurm
and SkyPilot job files, of sweeps untouched for ``older_than_days``, and wheels built for SkyPilot
nodes that long ago. Folders of a local batch that is still running are kept. Fragments in
buckets are never touched.

    >>> import os, tempfile, pathlib
    >>> home = pathlib.Path(tempfile.mkdtemp())
    >>> old = home / "local" / "s-1234abcd"
    >>> old.mkdir(parents=True); _ = (old / "b000.exit").write_text("0")
    >>> os.utime(old / "b000.exit", (0, 0)); os.utime(old, (0, 0))
    >>> wheel = home / "wheels" / "0123abcd"
    >>> wheel.mkdir(parents=True); _ = (wheel / "qec_kiln-0.1.0-py3-none-any.whl").write_text("")
    >>> os.utime(wheel / "qec_kiln-0.1.0-py3-none-any.whl", (0, 0)); os.utime(wheel, (0, 0))
    >>> [p.name for p in clean_state(home, older_than_days=1)]
    ['s-1234abcd', '0123abcd']
    >>> old.exists(), wheel.exists()
    (False, False)
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import time
from collections.abc import Sequence

from qec_kiln._backends import BACKENDS, get_backend, kiln_home
from qec_kiln._command._base import Parser, out, parse_args, run

HELP = ("remove old local state (job records, work folders) under $QEC_KILN_HOME, default "
        "~/.cache/qec-kiln; buckets are not touched")

#: The sub-folders of ``$QEC_KILN_HOME`` that hold one folder per sweep: one per backend.
KINDS = tuple(BACKENDS)


def _newest_mtime(folder: pathlib.Path) -> float:
    newest = folder.stat().st_mtime
    for p in folder.rglob("*"):
        try:
            newest = max(newest, p.lstat().st_mtime)
        except OSError:
            continue
    return newest


def clean_state(home: pathlib.Path, *, older_than_days: float, dry_run: bool = False
                ) -> list[pathlib.Path]:
    """Remove (or with ``dry_run`` only list) sweep folders untouched for ``older_than_days``."""
    cutoff = time.time() - older_than_days * 86400
    removed = []
    for kind in KINDS:
        backend = get_backend(kind)
        base = home / kind
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            if not folder.is_dir() or folder.is_symlink():
                continue
            if _newest_mtime(folder) > cutoff or backend.state_running(folder):
                continue
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    # Wheels of qec-kiln shipped to SkyPilot nodes, one folder per version of the code: a wheel
    # unused for DAYS is rebuilt (in seconds) if a launch needs it again.
    wheels = home / "wheels"
    for folder in sorted(wheels.iterdir()) if wheels.is_dir() else []:
        if folder.is_dir() and not folder.is_symlink() and _newest_mtime(folder) <= cutoff:
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    # merge's and status's cache of a cloud sweep's fragments (one file per bucket prefix): a
    # file unused for DAYS is read again from the bucket if a command needs it.
    cache = home / "bucket-cache"
    for path in sorted(cache.iterdir()) if cache.is_dir() else []:
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime <= cutoff:
            if not dry_run:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def parser() -> Parser:
    p = Parser(prog="qec-kiln clean", description=HELP)
    p.add_argument("--older-than", type=float, default=7.0, metavar="DAYS",
                   help="only sweeps untouched for this many days (default 7; 0: all that are "
                   "not running)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    home = kiln_home().expanduser()
    removed = clean_state(home, older_than_days=args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for folder in removed:
        out.print(f"{verb} {folder}", markup=False)
    out.print(f"{verb} {len(removed)} item(s) of local state (sweep folders, wheels, cached "
              f"fragments) untouched for {args.older_than:g} day(s) "
              f"under {home} (QEC_KILN_HOME); buckets are not touched", markup=False)
    return 0

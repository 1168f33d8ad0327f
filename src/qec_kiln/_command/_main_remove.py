"""``qec-kiln remove`` and ``qec_kiln.remove``: delete a sweep from its bucket (manifest,
circuits, fragments, leases, logs); refused while its batches run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qec_kiln._argtypes import DEFAULT_BUCKET
from qec_kiln._command._base import Parser, PathLike, out, parse_args, run
from qec_kiln._errors import Exit, KilnError

HELP = ("delete a sweep from the bucket (manifest, circuits, fragments, leases, logs); refused "
        "while its batches run")


def remove(bucket: PathLike, sweep: str, *, dry_run: bool = False,
           backend: str | None = None) -> list[str]:
    """Delete a sweep from its bucket (``qec-kiln remove``); refused while a batch of it runs
    (by the backend's job states or a live lease): cancel it first.

    Args:
        bucket: as in :func:`qec_kiln.status`.
        sweep: the sweep's name.
        dry_run: only list what would be removed.
        backend: whose job states (default: the one the sweep was launched with).

    Returns:
        The keys of its objects (manifest, circuits, fragments, leases, logs), removed or, with
        ``dry_run``, to be removed.

    Examples:
        >>> import tempfile, qec_kiln
        >>> qec_kiln.remove(tempfile.mkdtemp(), "nope")
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: ...nope: no such sweep in the bucket (nothing to remove); ...
    """
    from qec_kiln._backends import get_backend
    from qec_kiln._report.remove import remove_sweep
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest, manifest_key

    if not sweep:
        raise KilnError("remove needs the sweep's name: --sweep NAME")
    store = open_bucket(str(bucket))
    active: dict[str, str] = {}
    if store.exists(manifest_key(sweep)):
        manifest = load_manifest(store, sweep)
        states = get_backend(backend or manifest.backend).job_states(store.url, sweep)
        active = {b: j.state for b, j in states.items() if j.active}
    return remove_sweep(store, sweep, active, dry_run=dry_run)


def parser() -> Parser:
    p = Parser(prog="qec-kiln remove", description=HELP)
    p.add_argument("--bucket", default=DEFAULT_BUCKET)
    p.add_argument("--sweep", required=True, help="the sweep to remove")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--backend", help="default: the one the sweep was launched with")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    keys = remove(args.bucket, args.sweep, dry_run=True, backend=args.backend)
    where = f"sweep {args.sweep} from {args.bucket}"
    if args.dry_run:
        for k in keys:
            out.print(f"would remove {k}", markup=False)
        out.print(f"would remove {len(keys)} object(s) of {where}; dry run: nothing removed",
                  markup=False)
        return Exit.OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise KilnError(f"remove {where}: {len(keys)} object(s); give --yes to confirm "
                            "(no terminal to ask on), or --dry-run to list them")
        answer = input(f"remove {len(keys)} object(s) of {where}? This cannot be undone [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.print("nothing removed", markup=False)
            return Exit.OK
    removed = remove(args.bucket, args.sweep, backend=args.backend)
    out.print(f"removed {len(removed)} object(s) of {where}", markup=False)
    return Exit.OK


__all__ = ["remove"]

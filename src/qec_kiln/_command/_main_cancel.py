"""``qec-kiln cancel`` and ``qec_kiln.cancel``: stop every job of a sweep; its fragments are
kept, so a later launch resumes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qec_kiln._argtypes import DEFAULT_BUCKET
from qec_kiln._command._base import Parser, PathLike, out, parse_args, run
from qec_kiln._errors import KilnError

HELP = "stop every job of a sweep (fragments are kept)"


def cancel(bucket: PathLike = DEFAULT_BUCKET, sweep: str = "", *,
           backend: str | None = None) -> list[str]:
    """Stop every job of a sweep (``qec-kiln cancel``); its fragments are kept, so a later
    :func:`qec_kiln.launch` resumes.

    Args:
        bucket: as in :func:`qec_kiln.status`.
        sweep: the sweep's name.
        backend: whose jobs (default: the one the sweep was launched with).

    Returns:
        The jobs it stopped ([] when none was running or waiting): job ids, or for the local
        backend the batch ids, running or still waiting in a launch.

    Examples:
        >>> import tempfile, qec_kiln
        >>> qec_kiln.cancel(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        qec_kiln._errors.KilnError: cancel needs the sweep's name: --sweep NAME
    """
    from qec_kiln._backends import get_backend
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import load_manifest

    if not sweep:
        raise KilnError("cancel needs the sweep's name: --sweep NAME")
    store = open_bucket(str(bucket))
    manifest = load_manifest(store, sweep)
    return get_backend(backend or manifest.backend).cancel(store.url, manifest.sweep)


def sweep_names(bucket: PathLike = DEFAULT_BUCKET) -> list[str]:
    """The sweeps in ``bucket`` (what ``status`` and ``cancel`` without a sweep act on)."""
    from qec_kiln._storage import open_bucket
    from qec_kiln._sweep.manifest import resolve_sweep

    return resolve_sweep(open_bucket(str(bucket)), None)


def parser() -> Parser:
    p = Parser(prog="qec-kiln cancel", description=HELP)
    p.add_argument("--bucket", default=DEFAULT_BUCKET)
    p.add_argument("--sweep", help="default: the bucket's only sweep (several need --all)")
    p.add_argument("--all", action="store_true", help="cancel every sweep in the bucket")
    p.add_argument("--backend", help="default: the one the sweep was launched with")
    return p


def main(argv: Sequence[str]) -> int:
    return run(handle, parse_args(parser(), argv))


def handle(args: argparse.Namespace) -> int:
    sweeps = [args.sweep] if args.sweep else sweep_names(args.bucket)
    if len(sweeps) > 1 and not args.all:  # a bare cancel never stops several sweeps by surprise
        raise KilnError(f"{args.bucket} holds {len(sweeps)} sweeps ({', '.join(sweeps)}): give "
                        "--sweep NAME, or --all to cancel every one")
    # Every cancel first, then the report: a reader that leaves (`| head -1`) stops no cancel.
    results = [(sweep, cancel(args.bucket, sweep, backend=args.backend)) for sweep in sweeps]
    for sweep, cancelled in results:  # the bucket's one sweep, or every one with --all
        if cancelled:
            out.print(f"cancelled {len(cancelled)} job(s) of sweep {sweep}: "
                      f"{', '.join(cancelled)}; fragments are kept, `launch` again to resume",
                      markup=False)
        else:
            out.print(f"no running job of sweep {sweep} found", markup=False)
    return 0


__all__ = ["cancel", "sweep_names"]

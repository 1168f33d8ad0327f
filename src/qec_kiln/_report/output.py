"""Where ``qec-kiln merge --out`` writes, without ever replacing what is not a regular file.

``-`` is standard output (as ``sinter combine`` prints). A pipe, a FIFO or a character device
(``/dev/stdout``, ``/dev/null``, a terminal) is written plainly; a symbolic link is written
through (its target is replaced, the link stays); only a regular file, or a new one, is replaced
whole with :func:`qec_kiln._atomic.atomic_write`. Anything else is refused with one line.

Example:
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "real.csv").write_text("old")
    3
    >>> (d / "link.csv").symlink_to(d / "real.csv")
    >>> write_output(d / "link.csv", b"new\\n")
    >>> (d / "link.csv").is_symlink(), (d / "real.csv").read_text()
    (True, 'new\\n')
    >>> check_output(d)
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: --out '...' is a directory; give a file name, e.g. '.../merged.csv'
"""

from __future__ import annotations

import os
import pathlib
import stat
import sys

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import KilnError

STDOUT = "-"


def _kind(out: str | os.PathLike[str]) -> str:
    """'stdout', 'new', 'file', 'stream' (FIFO or character device) or 'dir'; other kinds refused."""
    if str(out) == STDOUT:
        return "stdout"
    try:
        mode = os.stat(out).st_mode  # follows symbolic links
    except FileNotFoundError:
        return "new"
    except OSError as ex:
        raise KilnError(f"--out {str(out)!r}: cannot use it ({ex.strerror or ex}); "
                        "choose a writable file path") from ex
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return "stream"
    if stat.S_ISDIR(mode):
        return "dir"
    what = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
    raise KilnError(f"--out {str(out)!r} is a {what}; give a file path, a pipe, or - for standard output")


def check_output(out: str | os.PathLike[str]) -> None:
    """Refuse an ``--out`` that cannot take the merged CSV, before any fragment is read."""
    if _kind(out) == "dir":
        raise KilnError(f"--out {str(out)!r} is a directory; give a file name, "
                        f"e.g. {os.path.join(out, 'merged.csv')!r}")


def write_output(out: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``out`` (see the module docstring for what each kind of path gets)."""
    check_output(out)
    kind = _kind(out)
    try:
        if kind == "stdout":
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif kind == "stream":
            with open(out, "wb") as f:
                f.write(data)
        else:
            real = pathlib.Path(os.path.realpath(out))  # through links; the links stay as they are
            atomic_write(real, data, tmp_prefix=f".{real.name}.")
    except OSError as ex:
        raise KilnError(f"--out {str(out)!r}: cannot write it ({ex.strerror or ex}); "
                        "choose a writable file path") from ex

"""One way to replace a file whole: write a private temporary file beside it, then rename it over.

Every file qec-kiln writes on this machine (local bucket objects, resume copies, rendered job
files, launch records, the calibration cache, merged CSVs) goes through :func:`atomic_write`, so
a reader never sees half a file and two writers never share a temporary name.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile

_TMP_PREFIX = ".kiln-tmp-"


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for a moment)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    fsync: bool = False,
    mode: int | None = None,
    tmp_prefix: str | None = None,
) -> None:
    """Replace ``path`` with ``data`` whole, or leave it as it was.

    The data goes to a temporary file of its own in the same directory (``tmp_prefix`` + a random
    part), which is renamed over ``path``. ``fsync=True`` also flushes the data and the rename to
    disk (for objects that must survive a crash). ``mode`` defaults to the mode of the file being
    replaced, or 0o666 less the umask for a new file. Parent folders are created.

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "sub" / "x.txt"
    >>> atomic_write(p, "hello\\n")
    >>> p.read_text()
    'hello\\n'
    >>> atomic_write(p, b"bye\\n"); p.read_bytes()
    b'bye\\n'
    >>> sorted(x.name for x in p.parent.iterdir())
    ['x.txt']
    """
    path = pathlib.Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~_umask()
    prefix = tmp_prefix if tmp_prefix is not None else f"{_TMP_PREFIX}{path.name}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        with contextlib.suppress(OSError):  # make the rename durable too (best effort)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


__all__ = ["atomic_write"]

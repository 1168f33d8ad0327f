"""LocalBucket: a bucket in a local (or shared NFS) directory."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import ObjectNotFound, PreconditionFailed, StorageError
from qec_kiln._storage._bucket import Bucket, RetryPolicy, precondition_message
from qec_kiln._storage._urls import BucketURL, one_line

# Temporary files of atomic local writes start with this; list_keys() never shows them.
_TMP_PREFIX = ".kiln-tmp-"


_HOST = socket.gethostname().replace(".", "-") or "host"
#: A temp file this old is abandoned whoever wrote it (no fragment upload takes an hour).
_ABANDONED_TEMP_SECONDS = 3600.0


def _remove_abandoned_temp_files(path: Path) -> None:
    """Delete temp files of earlier writes of ``path`` whose writer died mid-write (SIGKILL).

    A temp file is named ``.kiln-tmp-<name>.<host>.<pid>.<random>``: it is abandoned when that
    host is this one and the pid is gone, or (another host on a shared file system) when it is
    older than an hour.
    """
    prefix = f"{_TMP_PREFIX}{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    now = time.time()
    for tmp in candidates:
        host, _, rest = tmp.name[len(prefix):].partition(".")
        pid = rest.partition(".")[0]
        try:
            if host == _HOST and pid.isdigit():
                if int(pid) == os.getpid() or _pid_alive(int(pid)):
                    continue
            elif now - tmp.stat().st_mtime < _ABANDONED_TEMP_SECONDS:
                continue
            tmp.unlink()
        except OSError:
            continue


def _version(st: os.stat_result) -> str:
    """A local object's version: a replaced file is a new inode, with a new mtime."""
    return f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBucket(Bucket):
    """A directory (local disk or a shared file system); created on the first write.

    Writes go through :func:`qec_kiln._atomic.atomic_write` (a temporary file in the same
    directory, fsynced and renamed over the key), so a reader never sees a partial object.
    ``retry`` is accepted and ignored.
    """

    def __init__(self, parsed: BucketURL, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(parsed, retry=retry)
        self.root = Path(parsed.bucket)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*self._check_key(key).split("/"))

    def _os_error(self, exc: OSError, op: str, key: str | None) -> StorageError:
        target = self.url_for(key) if key else self.url
        return StorageError(f"cannot {op} {target}: {exc.strerror or one_line(exc)}")

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        path = os.path.join(self.root, self._check_key(key))  # a plain string: merge reads thousands
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.url_for(key)}: no such object") from None
        except OSError as exc:
            raise self._os_error(exc, "read", key) from exc

    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        path = self._path(key)
        data = self._check_data(data)
        try:
            # The temp name records host and pid, so _remove_abandoned_temp_files can tell a
            # dead writer's leftovers from a live one's.
            atomic_write(
                path, data, fsync=True, tmp_prefix=f"{_TMP_PREFIX}{path.name}.{_HOST}.{os.getpid()}."
            )
        except OSError as exc:
            raise self._os_error(exc, "write", key) from exc
        _remove_abandoned_temp_files(path)

    def read_versioned(self, key: str, *, retry: RetryPolicy | None = None) -> tuple[bytes, str]:
        path = self._path(key)
        try:
            with open(path, "rb") as f:  # the stat and the bytes of one inode
                return f.read(), _version(os.fstat(f.fileno()))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.url_for(key)}: no such object") from None
        except OSError as exc:
            raise self._os_error(exc, "read", key) from exc

    def _write_if(
        self, key: str, data: bytes, version: str | None, *, retry: RetryPolicy | None
    ) -> str:
        """Check the version and write under an exclusive ``flock`` of the key's folder (every
        conditional writer of a key takes it; the lock dies with its holder)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(folder, fcntl.LOCK_EX)
                try:
                    current: str | None = _version(path.stat())
                except FileNotFoundError:
                    current = None
                if current != version:
                    raise PreconditionFailed(precondition_message(
                        self.url_for(key), version, None if current is None else "another"))
                self.write_bytes(key, data)
                return _version(path.stat())
            finally:
                os.close(folder)  # releases the lock
        except OSError as exc:
            raise self._os_error(exc, "write", key) from exc

    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        prefix = self._check_prefix(prefix)
        dir_part = prefix.rpartition("/")[0]
        start = self.root.joinpath(*dir_part.split("/")) if dir_part else self.root
        keys: list[str] = []

        def on_error(exc: OSError) -> None:
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise self._os_error(exc, "list", None)

        for dirpath, dirnames, filenames in os.walk(start, onerror=on_error):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                key = rel + name
                if not name.startswith(_TMP_PREFIX) and key.startswith(prefix):
                    keys.append(key)
            # Only descend into directories that can hold keys starting with the prefix.
            dirnames[:] = [
                d
                for d in dirnames
                if (rel + d + "/").startswith(prefix) or prefix.startswith(rel + d + "/")
            ]
        return sorted(keys)

    def list_versions(self, prefix: str = "", *,
                      retry: RetryPolicy | None = None) -> dict[str, str]:
        out = {}
        for key in self.list_keys(prefix):
            try:
                out[key] = _version(self._path(key).stat())
            except OSError:
                continue  # removed since the listing
        return out

    def reads_are_local(self) -> bool:
        return True

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
        except OSError as exc:
            raise self._os_error(exc, "delete", key) from exc

    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        path = self.root
        if path.exists():
            if not path.is_dir():
                raise StorageError(f"{self.url} exists but is not a directory; use another path")
            if not os.access(path, os.W_OK | os.X_OK):
                raise StorageError(f"directory {self.url} is not writable; fix its permissions")
            return
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise StorageError(
                f"cannot create directory {self.url}: {ancestor} is not a writable directory"
            )


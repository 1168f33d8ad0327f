"""Network guard for the local SkyPilot test setup (.ci/sky-local.sh): log every non-loopback
``socket.connect`` target of this interpreter to ``$KILN_NET_GUARD_LOG``.

Loaded at start-up by a ``.pth`` line in the SkyPilot venv (``import kiln_net_guard``) and by the
tests (``install()``). It blocks nothing: it records, and the test fixture fails the session when
the log is not empty at teardown. Connections of pip (package installs through the index, the one
allowed traffic) go to ``$KILN_NET_GUARD_LOG.index`` instead. Without ``KILN_NET_GUARD_LOG`` it
does nothing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
import traceback
from pathlib import Path

_INSTALLED = False


def is_loopback(address: object) -> bool:
    """True for an AF_UNIX path, 127.0.0.0/8, ::1, 0.0.0.0, ``localhost`` (or an unparsable
    target that is not an (host, port) pair).

    >>> is_loopback(("127.0.0.1", 22)), is_loopback(("::1", 22, 0, 0)), is_loopback("/run/x")
    (True, True, True)
    >>> is_loopback(("8.8.8.8", 443)), is_loopback(("pypi.org", 443))
    (False, False)
    """
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX (a path), AF_NETLINK, ...
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return True
    if host in ("localhost", "", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost


def _is_installer() -> bool:
    """pip (also a build-isolation pip that ``pip wheel`` starts): the one allowed traffic."""
    prog = sys.argv[0] if sys.argv else ""
    return Path(prog).parent.name == "pip" or Path(prog).name in ("pip", "pip3")


def _hook(event: str, args: tuple) -> None:
    if event != "socket.connect":
        return
    try:
        sock, address = args[0], args[1]
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or is_loopback(address):
            return
        path = os.environ.get("KILN_NET_GUARD_LOG")
        if not path:
            return
        if _is_installer():
            path += ".index"  # a package install through the index: allowed, kept for the record
        frames = traceback.extract_stack(limit=12)[:-2]
        where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-6:]))
        line = (f"{time.time():.3f} pid={os.getpid()} connect {address!r} "
                f"argv={sys.argv[:2]!r} at {where}\n")
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except Exception:  # a guard must never break the program it watches
        pass


def install() -> None:
    """Add the audit hook once per interpreter (audit hooks cannot be removed)."""
    global _INSTALLED
    if not _INSTALLED and os.environ.get("KILN_NET_GUARD_LOG"):
        sys.addaudithook(_hook)
        _INSTALLED = True


install()

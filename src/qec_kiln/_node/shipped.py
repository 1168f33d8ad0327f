"""On the node, before sinter starts: the sweep's shipped decoder and sampler objects
(``_sweep/shipped.py``), downloaded, checked and handed to sinter.

For each object the manifest names, run-batch downloads ``<sweep>/decoders/<sha256>.pkl``,
refuses bytes whose SHA-256 is not the manifest's, refuses a Python whose ``major.minor`` is not
the launcher's (a class pickled by value loads only there), and loads each object once, so a
node that lacks what an object needs (a module it was pickled by reference to) says so by name.
Each refusal is one KilnError (exit 2) naming the decoder, before any lease is taken or anything
is sampled. Nothing is unpickled before its digest matches.

The verified pickles are written to the work folder with an index, whose path run-batch gives
sinter in ``$QEC_KILN_SHIPPED_DECODERS``; sinter runs with ``--custom_decoders_module_function``
:data:`LOADER`, which reads it (``_node/shipped_loader.py``).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import KilnError, ObjectNotFound
from qec_kiln._storage import Bucket
from qec_kiln._sweep.manifest import Manifest, decoder_object_key
from qec_kiln._sweep.shipped import python_version

#: The environment variable that tells the loader where the verified index is.
ENV = "QEC_KILN_SHIPPED_DECODERS"
#: sinter's ``--custom_decoders_module_function`` for a sweep with shipped objects.
LOADER = "qec_kiln._node.shipped_loader:sinter_decoders"


def prepare_shipped(bucket: Bucket, manifest: Manifest, folder: pathlib.Path) -> dict[str, str]:
    """Download and check the manifest's shipped objects into ``folder``; the environment
    sinter needs to load them (empty for a sweep without any). KilnError for a changed or
    missing object, another Python minor version, or an object this node cannot load."""
    shipped = manifest.shipped
    if shipped is None or not shipped.objects:
        return {}
    index: dict[str, dict[str, str]] = {}
    blobs: dict[str, bytes] = {}
    for o in shipped.objects:
        key = decoder_object_key(manifest.sweep, o.sha256)
        try:
            blob = bucket.read_bytes(key)
        except ObjectNotFound:
            raise KilnError(f"shipped decoder {o.name!r}: {bucket.url_for(key)} is missing; "
                            "nothing was sampled; relaunch the sweep under a new --name") from None
        got = hashlib.sha256(blob).hexdigest()
        if got != o.sha256:
            raise KilnError(
                f"shipped decoder {o.name!r}: {bucket.url_for(key)} has sha256 {got[:12]}, not "
                f"the {o.sha256[:12]} that the manifest of sweep {manifest.sweep!r} records: the "
                "object was changed in the bucket, so it is not loaded and nothing was sampled; "
                "relaunch the sweep under a new --name, and keep the bucket writable only by you "
                "(SECURITY.md)")
        blobs[o.name] = blob
        path = folder / f"{o.sha256}.pkl"
        atomic_write(path, blob)
        index[o.name] = {"kind": o.kind, "sha256": o.sha256, "path": str(path.resolve())}
    here = python_version()
    if here != shipped.python:
        names = ", ".join(repr(o.name) for o in shipped.objects)
        raise KilnError(
            f"shipped decoder(s) {names} were pickled by Python {shipped.python} on the launcher, "
            f"but this node runs Python {here} ({sys.executable}): classes pickled by value load "
            f"only on the same minor version; run the nodes with Python {shipped.python} (a "
            f"SkyPilot node's setup makes its venv with uv, which installs it), or launch from "
            f"Python {here}")
    for o in shipped.objects:
        _check_loads(o.name, o.kind, o.type, blobs[o.name], shipped.cloudpickle)
    index_path = folder / "index.json"
    atomic_write(index_path, json.dumps(index, indent=1).encode())
    return {ENV: str(index_path.resolve())}


def _check_loads(name: str, kind: str, where: str, blob: bytes, launcher_cloudpickle: str) -> None:
    """Load ``blob`` once here (the verified bytes), so that a node missing what the object
    needs says so by name before sinter starts."""
    try:
        import cloudpickle

        from qec_kiln._sweep.shipped import kind_of

        obj = cloudpickle.loads(blob)
        found = kind_of(obj)
    except Exception as ex:  # any failure of the object's own code or of a missing module
        try:
            import cloudpickle as cp

            versions = f"cloudpickle {cp.__version__} here, {launcher_cloudpickle} on the launcher"
        except ImportError:
            versions = f"no cloudpickle here ({launcher_cloudpickle} on the launcher)"
        raise KilnError(
            f"shipped decoder {name!r} ({where}) cannot be loaded on this node: "
            f"{type(ex).__name__}: {ex} ({versions}); install on the nodes what it needs, or "
            "define its class in __main__ (or call cloudpickle.register_pickle_by_value(module) "
            "before launching) so that it ships by value; nothing was sampled") from ex
    if found != kind:
        raise KilnError(f"shipped decoder {name!r} ({where}) loads as a {found or 'neither'}, "
                        f"but the manifest records a {kind}; relaunch the sweep")


__all__ = ["ENV", "LOADER", "prepare_shipped"]

"""``sinter collect --custom_decoders_module_function qec_kiln._node.shipped_loader:sinter_decoders``:
the sweep's shipped decoder and sampler objects, as the unmodified sinter takes them.

run-batch checked them and wrote them to its work folder (``_node/shipped.py``), and names the
index in ``$QEC_KILN_SHIPPED_DECODERS``. sinter pickles its decoders again with the standard
pickler for the worker processes it spawns, which cannot find a class defined in the
launcher's ``__main__`` (../shared/NOTES.md). So each object is handed to sinter inside a
wrapper of sinter's own kind whose ``__reduce__`` is ``(cloudpickle.loads, (its pickle,))``: each
worker gets the object itself, rebuilt by value, and the wrapper delegates every call to it.

    >>> import cloudpickle, sinter
    >>> class Zeros(sinter.Decoder):
    ...     def compile_decoder_for_dem(self, *, dem):
    ...         return "compiled"
    >>> w = wrap(Zeros(), cloudpickle.dumps(Zeros()))
    >>> isinstance(w, sinter.Decoder), w.compile_decoder_for_dem(dem=None)
    (True, 'compiled')
    >>> import pickle
    >>> type(pickle.loads(pickle.dumps(w))).__name__  # what a spawned worker gets
    'Zeros'
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

import cloudpickle
import sinter

from qec_kiln._node.shipped import ENV


class ShippedDecoder(sinter.Decoder):
    """A shipped ``sinter.Decoder`` (or a duck-typed one): pickles as its own pickle."""

    def __init__(self, obj: Any, blob: bytes):
        self.obj = obj
        self.blob = blob

    def compile_decoder_for_dem(self, *, dem: Any) -> Any:
        return self.obj.compile_decoder_for_dem(dem=dem)

    def decode_via_files(self, **kwargs: Any) -> None:  # sinter's keyword-only arguments
        return self.obj.decode_via_files(**kwargs)

    def __getattr__(self, attr: str) -> Any:  # anything else the object has
        if attr in ("obj", "blob"):  # not set yet: no recursion
            raise AttributeError(attr)
        return getattr(self.obj, attr)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return cloudpickle.loads, (self.blob,)

    def __repr__(self) -> str:
        return f"ShippedDecoder({self.obj!r})"


class ShippedSampler(sinter.Sampler):
    """A shipped ``sinter.Sampler``: pickles as its own pickle."""

    def __init__(self, obj: Any, blob: bytes):
        self.obj = obj
        self.blob = blob

    def compiled_sampler_for_task(self, task: sinter.Task) -> sinter.CompiledSampler:
        return self.obj.compiled_sampler_for_task(task)

    def __getattr__(self, attr: str) -> Any:
        if attr in ("obj", "blob"):
            raise AttributeError(attr)
        return getattr(self.obj, attr)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return cloudpickle.loads, (self.blob,)

    def __repr__(self) -> str:
        return f"ShippedSampler({self.obj!r})"


def wrap(obj: Any, blob: bytes) -> ShippedDecoder | ShippedSampler:
    """``obj`` (loaded from ``blob``) in the wrapper of its kind."""
    if isinstance(obj, sinter.Sampler):
        return ShippedSampler(obj, blob)
    return ShippedDecoder(obj, blob)


def sinter_decoders() -> dict[str, ShippedDecoder | ShippedSampler]:
    """The shipped objects by name, wrapped; the files' digests checked again (they are the
    verified ones run-batch wrote)."""
    where = os.environ.get(ENV)
    if not where:
        raise RuntimeError(f"${ENV} is not set: this loader is for the sinter that "
                           "`qec-kiln run-batch` starts")
    index = json.loads(pathlib.Path(where).read_text())
    out: dict[str, ShippedDecoder | ShippedSampler] = {}
    for name, entry in index.items():
        blob = pathlib.Path(entry["path"]).read_bytes()
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise RuntimeError(f"shipped decoder {name!r}: {entry['path']} changed after "
                               "run-batch checked it; run the batch again")
        out[name] = wrap(cloudpickle.loads(blob), blob)
    return out


__all__ = ["ShippedDecoder", "ShippedSampler", "sinter_decoders", "wrap"]

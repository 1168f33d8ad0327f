"""The wrappers in which shipped decoder and sampler objects (``_sweep/shipped.py``) reach sinter,
on the nodes (``_node/shipped_loader.py``) and in the planner's pilots alike.

sinter pickles its decoders again with the standard pickler for the worker processes it spawns,
which cannot find a class defined in the launcher's ``__main__`` or a notebook
(../shared/NOTES.md). So each object is handed to sinter inside a wrapper of sinter's own kind
whose ``__reduce__`` is ``(cloudpickle.loads, (its pickle,))``: each worker gets the object itself,
rebuilt by value, and the wrapper delegates every call to it.

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

from typing import Any

import cloudpickle
import sinter


class _Shipped:
    """What both wrappers share: the object and its pickle, delegation of anything else the
    object has, and pickling as that pickle."""

    def __init__(self, obj: Any, blob: bytes):
        self.obj = obj
        self.blob = blob

    def __getattr__(self, attr: str) -> Any:  # anything else the object has
        if attr in ("obj", "blob"):  # not set yet: no recursion
            raise AttributeError(attr)
        return getattr(self.obj, attr)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return cloudpickle.loads, (self.blob,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.obj!r})"


class ShippedDecoder(_Shipped, sinter.Decoder):
    """A shipped ``sinter.Decoder`` (or a duck-typed one): pickles as its own pickle."""

    def compile_decoder_for_dem(self, *, dem: Any) -> Any:
        return self.obj.compile_decoder_for_dem(dem=dem)

    def decode_via_files(self, **kwargs: Any) -> None:  # sinter's keyword-only arguments
        return self.obj.decode_via_files(**kwargs)


class ShippedSampler(_Shipped, sinter.Sampler):
    """A shipped ``sinter.Sampler``: pickles as its own pickle."""

    def compiled_sampler_for_task(self, task: sinter.Task) -> sinter.CompiledSampler:
        return self.obj.compiled_sampler_for_task(task)


def wrap(obj: Any, blob: bytes) -> ShippedDecoder | ShippedSampler:
    """``obj`` (loaded from ``blob``) in the wrapper of its kind."""
    if isinstance(obj, sinter.Sampler):
        return ShippedSampler(obj, blob)
    return ShippedDecoder(obj, blob)


__all__ = ["ShippedDecoder", "ShippedSampler", "wrap"]

"""Custom decoder and sampler *objects* shipped with a sweep (the API's ``custom_decoders``).

sinter's Python API takes ``custom_decoders={name: sinter.Decoder | sinter.Sampler}``; the
nodes run the unmodified ``sinter collect``, which only takes
``--custom_decoders_module_function module:function``. So each object named in ``decoders`` is
pickled here with cloudpickle (which pickles classes defined in ``__main__`` or a notebook by
value, as submitit ships functions), stored content-addressed in the bucket beside the manifest
(``<sweep>/decoders/<sha256>.pkl``), and the manifest records each name's kind and SHA-256 with
the launcher's Python ``major.minor`` and cloudpickle version. On the node, run-batch checks all
of it before sinter starts (``_node/shipped.py``) and points sinter at a loader
(``_node/shipped_loader.py``).

    >>> import sinter
    >>> class AllZeros(sinter.Decoder):  # a class of this scope: pickled by value
    ...     pass
    >>> shipment = pack({"zeros": AllZeros(), "unused": AllZeros()}, ["pymatching", "zeros"])
    >>> [(o.name, o.kind, len(o.sha256)) for o in shipment.record.objects]
    [('zeros', 'decoder', 64)]
    >>> Shipped.from_json(shipment.record.to_json()) == shipment.record
    True

Only the objects that ``decoders`` names are shipped (sinter ignores the others too). Nothing
here imports cloudpickle or sinter until :func:`pack` runs: merge and status read manifests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from qec_kiln._errors import KilnError

#: Each shipped object's kind, as sinter tells them apart (``_collection/_mux_sampler.py``).
KINDS = ("decoder", "sampler")


def python_version() -> str:
    """This Python's ``major.minor``: what a pickle by value needs on both ends.

    >>> python_version().count(".")
    1
    """
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclasses.dataclass(frozen=True)
class ShippedObject:
    """One shipped object, as the manifest records it."""

    name: str  # the decoder's name in --decoders and in every row's strong_id
    kind: str  # "decoder" or "sampler"
    sha256: str  # of its cloudpickle bytes (the bucket object <sweep>/decoders/<sha256>.pkl)
    type: str  # ``module.QualName`` of its class (for messages: where it must load from)
    #: sha256 of those bytes with cloudpickle's per-session class ids blanked (:func:`identity`):
    #: the same object pickled in another Python session has the same identity
    identity: str = ""


@dataclasses.dataclass(frozen=True)
class Shipped:
    """The manifest's record of the shipped objects: names, kinds, digests, and the versions
    that pickled them."""

    objects: tuple[ShippedObject, ...]
    python: str  # the launcher's major.minor
    cloudpickle: str  # the launcher's cloudpickle version

    def digests(self) -> dict[str, str]:
        """name -> identity (what enters the sweep's inputs digest): the same objects again,
        from a restarted notebook too, are the same sweep, which then resumes."""
        return {o.name: o.identity or o.sha256 for o in self.objects}

    def to_json(self) -> dict[str, Any]:
        return {"python": self.python, "cloudpickle": self.cloudpickle,
                "decoders": {o.name: {"kind": o.kind, "sha256": o.sha256, "type": o.type,
                                      "identity": o.identity} for o in self.objects}}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Shipped:
        objects = tuple(ShippedObject(name, e["kind"], e["sha256"], e.get("type", "?"),
                                      e.get("identity", ""))
                        for name, e in d["decoders"].items())
        return Shipped(objects, str(d["python"]), str(d.get("cloudpickle", "?")))

    def describe(self) -> list[str]:
        """One line per object, then the versions: what ``plan`` prints.

        >>> Shipped((ShippedObject("x", "sampler", "ab" * 32, "__main__.S"),), "3.11",
        ...         "3.1.3").describe()[0]
        'x: sampler __main__.S, sha256 abababababab'
        """
        lines = [f"{o.name}: {o.kind} {o.type}, sha256 {o.sha256[:12]}" for o in self.objects]
        lines.append(f"pickled by Python {self.python} with cloudpickle {self.cloudpickle}: "
                     f"the nodes need Python {self.python}")
        return lines


@dataclasses.dataclass(frozen=True)
class Shipment:
    """The objects to upload (sha256 -> cloudpickle bytes) and their record."""

    record: Shipped
    blobs: dict[str, bytes]


def check_objects(objects: Any) -> dict[str, Any] | None:
    """``custom_decoders`` as given to the API, as a dict (None when empty); one KilnError for
    anything but a mapping of names to objects. Whether each is a decoder or a sampler is
    checked by :func:`pack` (which imports sinter).

    >>> check_objects({}) is None
    True
    >>> check_objects(["x"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: custom_decoders must map decoder names to ...; got a list
    """
    if objects is None:
        return None
    if not isinstance(objects, Mapping):
        raise KilnError("custom_decoders must map decoder names to sinter.Decoder or "
                        "sinter.Sampler objects, as in sinter.collect(custom_decoders={'name': "
                        f"MyDecoder()}}); got a {type(objects).__name__}")
    for name in objects:
        if not isinstance(name, str) or not name:
            raise KilnError(f"custom_decoders: the name {name!r} is not a non-empty string; "
                            "name each object as --decoders names it")
    return dict(objects) or None


def kind_of(obj: Any) -> str | None:
    """``"sampler"`` or ``"decoder"`` as sinter's collection tells them apart (a decoder may
    be duck-typed, as chromobius's is), else None."""
    import sinter

    if isinstance(obj, sinter.Sampler):
        return "sampler"
    if isinstance(obj, sinter.Decoder) or hasattr(obj, "compile_decoder_for_dem"):
        return "decoder"
    return None


def pack(objects: Mapping[str, Any], decoders: Sequence[str]) -> Shipment:
    """Pickle the objects that ``decoders`` names with cloudpickle; KilnError naming the first
    that is neither a decoder nor a sampler, or that cannot be pickled."""
    import cloudpickle

    records, blobs = [], {}
    for name in decoders:
        if name not in objects:
            continue
        obj = objects[name]
        kind = kind_of(obj)
        cls = type(obj)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if kind is None:
            raise KilnError(f"custom_decoders[{name!r}] is a {where}, neither a sinter.Decoder "
                            "nor a sinter.Sampler; give an instance of a subclass of one")
        try:
            blob = cloudpickle.dumps(obj)
        except Exception as ex:  # any failure of user code or of an unpicklable member
            raise KilnError(f"custom_decoders[{name!r}] ({where}) cannot be pickled to ship it "
                            f"to the nodes: {ex}; keep in it only what pickles (build open "
                            "files, locks and native handles in compile_decoder_for_dem)") from ex
        sha = hashlib.sha256(blob).hexdigest()
        records.append(ShippedObject(name, kind, sha, where, identity(blob)))
        blobs[sha] = blob
    return Shipment(Shipped(tuple(records), python_version(), cloudpickle.__version__), blobs)


def identity(blob: bytes) -> str:
    """The sha256 of a cloudpickle of this session with the ids that cloudpickle gives each
    class it pickles by value (a random uuid4 per class and session, so that one session
    rebuilds one class once) blanked: the same class and state pickled in another session (a
    restarted notebook) have the same identity, while the bytes, and their sha256, differ.

    >>> identity(b"abc") == hashlib.sha256(b"abc").hexdigest()
    True
    """
    from cloudpickle import cloudpickle as internals

    # A private table of cloudpickle (pinned by the lock); without it, the bytes' own digest.
    tracked = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", {})
    for class_id in {str(v).encode() for v in list(tracked.values())}:
        blob = blob.replace(class_id, b"0" * len(class_id))
    return hashlib.sha256(blob).hexdigest()


__all__ = ["KINDS", "Shipment", "Shipped", "ShippedObject", "check_objects", "identity", "kind_of",
           "pack", "python_version"]

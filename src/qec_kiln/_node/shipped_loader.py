"""``sinter collect --custom_decoders_module_function qec_kiln._node.shipped_loader:sinter_decoders``:
the sweep's shipped decoder and sampler objects, as the unmodified sinter takes them.

run-batch checked them and wrote them to its work folder (``_node/shipped.py``), and names the
index in ``$QEC_KILN_SHIPPED_DECODERS``; each object reaches sinter in a wrapper that pickles by
value for sinter's spawned workers (``_sweep/shipped_objects.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import cloudpickle

from qec_kiln._node.shipped import ENV
from qec_kiln._sweep.shipped_objects import ShippedDecoder, ShippedSampler, wrap


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


__all__ = ["sinter_decoders"]

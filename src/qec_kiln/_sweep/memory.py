"""In-memory circuits (``sinter.Task`` s, ``stim.Circuit`` s) as a folder discovery reads: each
circuit a ``.stim`` file, named from its metadata when ``--metadata_func auto`` reads that name
back exactly, else by a digest, with the metadata in the folder's index
(``discover.METADATA_INDEX``). The folder is named by a digest of its contents, so the same
tasks give the same folder, the same sweep name, and a rerun resumes.

    >>> import stim, tempfile, pathlib
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
    ...                            after_clifford_depolarization=0.01)
    >>> name_for(c, {"d": 3, "p": 0.01}), name_for(c, {"d": [3]})[:5]
    ('d=3,p=0.01.stim', 'task-')
    >>> folder, decoders = write_tasks([sinter.Task(circuit=c, json_metadata={"d": 3})],
    ...                                pathlib.Path(tempfile.mkdtemp()))
    >>> sorted(p.name for p in folder.iterdir()), decoders
    (['.qec-kiln-metadata.json', 'd=3.stim'], [])
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import sinter
import stim

from qec_kiln._atomic import atomic_write
from qec_kiln._errors import KilnError
from qec_kiln._sweep.discover import METADATA_INDEX


def is_in_memory(items: Any) -> bool:
    """Whether ``items`` are tasks or circuits (not paths)."""
    if isinstance(items, sinter.Task | stim.Circuit):
        return True
    return (isinstance(items, Sequence) and not isinstance(items, str) and bool(items)
            and all(isinstance(i, sinter.Task | stim.Circuit) for i in items))


def name_for(circuit: stim.Circuit, metadata: Any) -> str:
    """``d=3,p=0.01.stim`` when sinter reads that name back as exactly ``metadata``, else
    ``task-<digest>.stim``."""
    if isinstance(metadata, dict) and metadata:
        name = ",".join(f"{k}={v}" for k, v in metadata.items()) + ".stim"
        try:
            if (json.dumps(sinter.comma_separated_key_values(name)) == json.dumps(metadata)
                    and "/" not in name and not name.startswith(".")):
                return name
        except ValueError:
            pass
    digest = hashlib.sha256((str(circuit) + "\0" + json.dumps(metadata)).encode()).hexdigest()
    return f"task-{digest[:16]}.stim"


def _check_task(task: sinter.Task, i: int) -> None:
    """Refuse what the nodes' ``sinter collect`` would not reproduce (it builds the DEM and
    masks itself: the strong_id is compared after planning)."""
    if task.circuit is None:
        raise KilnError(f"task {i}: sinter.Task without a circuit (circuit_path={task.circuit_path!r}); "
                        "give circuit=stim.Circuit(...) or pass the .stim paths instead")
    if task.collection_options != sinter.CollectionOptions():
        raise KilnError(f"task {i}: per-task collection_options are not supported; give "
                        "max_shots/max_errors to qec_kiln.collect for all tasks")


def write_tasks(items: Any, root: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    """Write ``items`` (tasks or circuits) into ``root/<digest>/tasks/`` with their metadata
    index; returns that folder and the tasks' own decoders (in order, each once)."""
    items = [items] if isinstance(items, sinter.Task | stim.Circuit) else list(items)
    files: dict[str, str] = {}
    index: dict[str, Any] = {}
    decoders: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, stim.Circuit):
            circuit, metadata = item, None
        else:
            _check_task(item, i)
            circuit, metadata = item.circuit, item.json_metadata
            if item.decoder is not None and item.decoder not in decoders:
                decoders.append(item.decoder)
        name = name_for(circuit, metadata)
        text = str(circuit)
        if name in files and files[name] != text:
            raise KilnError(f"task {i}: two different circuits with the same json_metadata "
                            f"{json.dumps(metadata)}; give each task its own metadata")
        files[name] = text
        index[name] = metadata
    digest = hashlib.sha256(json.dumps([files, index], sort_keys=True).encode()).hexdigest()
    folder = root / digest[:16] / "tasks"
    for name, text in files.items():
        atomic_write(folder / name, text.encode())
    atomic_write(folder / METADATA_INDEX, json.dumps(index).encode())
    return folder, decoders


__all__ = ["is_in_memory", "name_for", "write_tasks"]

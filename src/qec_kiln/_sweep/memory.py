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
    >>> w = write_tasks([sinter.Task(circuit=c, json_metadata={"d": 3}),
    ...                  sinter.Task(circuit=c, json_metadata=None, decoder="vacuous")],
    ...                 pathlib.Path(tempfile.mkdtemp()))
    >>> sorted(p.name for p in w.folder.iterdir()), w.decoders, w.names[0]
    (['.qec-kiln-metadata.json', 'd=3.stim', 'task-...stim'], ['vacuous'], 'd=3.stim')
"""

from __future__ import annotations

import dataclasses
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


def task_circuit(task: sinter.Task, i: int) -> stim.Circuit:
    """The task's circuit: given, or read from its ``circuit_path`` (as sinter reads it)."""
    if task.circuit is not None:
        return task.circuit
    if task.circuit_path is None:
        raise KilnError(f"task {i}: sinter.Task with neither circuit= nor circuit_path=; give one")
    try:
        return stim.Circuit.from_file(str(task.circuit_path))
    except (OSError, ValueError) as ex:
        raise KilnError(f"task {i}: cannot read circuit_path={str(task.circuit_path)!r} "
                        f"({ex}); give a readable .stim file") from None


@dataclasses.dataclass(frozen=True)
class Written:
    """Where :func:`write_tasks` wrote the circuits: the folder, each item's file name (its
    circuit key in the sweep), and the tasks' own decoders (in order, each once)."""

    folder: pathlib.Path
    names: list[str]
    decoders: list[str]


def write_tasks(items: Any, root: pathlib.Path) -> Written:
    """Write ``items`` (tasks or circuits) into ``root/<digest>/tasks/`` with their metadata
    index (any JSON, ``None`` included). Tasks with the same circuit and metadata share a
    file (they differ only in decoder or options: one circuit of the sweep)."""
    items = [items] if isinstance(items, sinter.Task | stim.Circuit) else list(items)
    files: dict[str, str] = {}
    index: dict[str, Any] = {}
    decoders: list[str] = []
    names: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, stim.Circuit):
            circuit, metadata = item, None
        else:
            circuit, metadata = task_circuit(item, i), item.json_metadata
            if item.decoder is not None and item.decoder not in decoders:
                decoders.append(item.decoder)
        name = name_for(circuit, metadata)
        names.append(name)
        text = str(circuit)
        if name in files and files[name] != text:
            raise KilnError(f"task {i}: two different circuits with the same json_metadata "
                            f"{json.dumps(metadata)}; give each task its own metadata")
        files[name] = text
        index[name] = metadata
    digest = hashlib.sha256(json.dumps([files, index], sort_keys=True).encode()).hexdigest()
    folder = root / digest[:16] / "tasks"
    if not (folder / METADATA_INDEX).is_file():  # written last: else the folder is complete
        for name, text in files.items():
            atomic_write(folder / name, text.encode())
        atomic_write(folder / METADATA_INDEX, json.dumps(index).encode())
    return Written(folder, names, decoders)


__all__ = ["Written", "is_in_memory", "name_for", "task_circuit", "write_tasks"]

"""Find the sweep's circuits, read their metadata the way ``sinter collect --metadata_func auto``
does, and refuse bad input before anything is planned or launched.

Example:
    >>> circuits = discover_circuits("demo/circuits")  # doctest: +SKIP
    >>> circuits[0].key, circuits[0].metadata  # doctest: +SKIP
    ('d=3,p=0.001,b=X,type=rotated_surface_memory.stim', {'d': 3, 'p': 0.001, 'b': 'X', ...})
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
import pathlib
from collections.abc import Iterable, Sequence

import sinter
import stim

from qec_kiln._cost import dem_for_circuit
from qec_kiln._errors import KilnError

#: Gates that tsim (bloqade-tsim) reinterprets when tagged, e.g. ``S[T] 0`` or ``I[R_Z(theta=0.1)] 0``.
#: Plain stim ignores the tag and would simulate a different circuit without a word.
TSIM_TAGGED_GATES = frozenset(
    {"S", "S_DAG", "I", "SQRT_X", "SQRT_X_DAG", "SQRT_Y", "SQRT_Y_DAG", "SPP", "SPP_DAG"}
)


@dataclasses.dataclass(frozen=True)
class CircuitFile:
    """One ``.stim`` file of the sweep.

    ``key`` is its path relative to the sweep folder (POSIX separators): unique within the sweep and
    the name it has in the bucket. ``metadata`` is exactly what ``sinter.comma_separated_key_values``
    makes of the file name, so strong_ids match a plain ``sinter collect --metadata_func auto``.
    """

    path: pathlib.Path
    key: str
    text: str
    sha256: str
    metadata: dict

    @functools.cached_property
    def circuit(self) -> stim.Circuit:
        return stim.Circuit(self.text)

    @functools.cached_property
    def dem(self) -> stim.DetectorErrorModel:
        """The detector error model exactly as sinter builds it for a task (with its fallbacks to
        an undecomposed model, which decoders such as chromobius accept)."""
        return dem_for_circuit(self.circuit)

    def strong_id(self, decoder: str) -> str:
        """The strong_id sinter will give this circuit with ``decoder``."""
        task = sinter.Task(
            circuit=self.circuit,
            decoder=decoder,
            detector_error_model=self.dem,
            json_metadata=self.metadata,
        )
        return task.strong_id()


def discover_circuits(folder: str | pathlib.Path, *, allow_tagged_gates: bool = False) -> list[CircuitFile]:
    """Every ``*.stim`` file under ``folder`` (recursively), sorted by key, validated.

    Raises KilnError naming the folder or file, with what to do, for: a missing or empty folder, a
    folder without ``.stim`` files, a file that stim cannot parse, a circuit without observables or
    detectors, a name that ``--metadata_func auto`` cannot parse, and tsim-tagged gates (unless
    ``allow_tagged_gates``, i.e. a tsim sampler is configured).
    """
    root = pathlib.Path(folder)
    if not root.exists():
        raise KilnError(f"{folder}: no such folder; pass the folder that holds your .stim circuits")
    if not root.is_dir():
        raise KilnError(f"{folder}: not a folder; pass the folder that holds your .stim circuits")
    paths = sorted(p for p in root.rglob("*.stim") if p.is_file() and not _hidden(root, p))
    if not paths:
        others = sorted(p.name for p in root.rglob("*") if p.is_file())
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise KilnError(
                f"{folder}: no .stim files (found {len(others)} other files: {shown}); "
                "circuits must be stim circuit files ending in .stim"
            )
        raise KilnError(f"{folder}: the folder is empty; put your .stim circuits in it")
    return [_read_circuit(root, p, allow_tagged_gates) for p in paths]


def _hidden(root: pathlib.Path, path: pathlib.Path) -> bool:
    """Files under hidden folders (``.ipynb_checkpoints/``, ``.git/``) or hidden files are skipped.

    >>> _hidden(pathlib.Path("c"), pathlib.Path("c/.ipynb_checkpoints/d=3-checkpoint.stim"))
    True
    """
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_circuit(root: pathlib.Path, path: pathlib.Path, allow_tagged_gates: bool) -> CircuitFile:
    shown = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as ex:
        raise KilnError(f"{shown}: cannot read the file ({ex}); fix its permissions or encoding") from ex
    try:
        metadata = sinter.comma_separated_key_values(path.name)
    except ValueError as ex:
        raise KilnError(
            f"{shown}: the file name is not comma-separated key=value terms "
            "(like 'd=5,p=0.001,b=X,type=rotated_surface_memory.stim'); rename it so "
            "`sinter collect --metadata_func auto` can read its metadata"
        ) from ex
    try:
        circuit = stim.Circuit(text)
    except ValueError as ex:
        first = str(ex).strip().splitlines()[0] if str(ex).strip() else "parse error"
        raise KilnError(f"{shown}: not a valid stim circuit ({first}); fix or remove the file") from ex
    if circuit.num_observables == 0:
        raise KilnError(
            f"{shown}: the circuit has no OBSERVABLE_INCLUDE, so there is no logical error to count; "
            "add its logical observables or remove the file"
        )
    if circuit.num_detectors == 0:
        raise KilnError(f"{shown}: the circuit has no DETECTOR instructions; add detectors or remove it")
    if not allow_tagged_gates:
        tagged = _first_tsim_tagged_gate(circuit)
        if tagged is not None:
            raise KilnError(
                f"{shown}: tagged gate '{tagged}' is a tsim (non-Clifford) instruction that plain "
                "stim would silently simulate as a Clifford; collect it with the tsim sampler "
                "(--custom-decoders-module-function qec_kiln.tsim:sinter_samplers --decoders tsim) "
                "or remove the tag"
            )
    found = CircuitFile(
        path=path.resolve(),
        key=path.relative_to(root).as_posix(),
        text=text,
        sha256=hashlib.sha256(raw).hexdigest(),
        metadata=metadata,
    )
    found.__dict__["circuit"] = circuit  # seed the cached properties: parse and analyse once
    try:
        found.dem  # noqa: B018 - computed (and cached) here to refuse circuits sinter can't model
    except ValueError as ex:
        first = str(ex).strip().splitlines()[0]
        raise KilnError(
            f"{shown}: stim cannot build a detector error model ({first}); "
            "sinter's decoders need one: check the circuit's noise and detectors"
        ) from ex
    return found


def _first_tsim_tagged_gate(circuit: stim.Circuit) -> str | None:
    for inst in circuit.flattened():
        if inst.tag and inst.name in TSIM_TAGGED_GATES:
            return f"{inst.name}[{inst.tag}]"
    return None


def check_duplicates(circuits: Sequence[CircuitFile], decoders: Iterable[str]) -> dict[tuple[str, str], str]:
    """Strong ids of every (circuit key, decoder); refuse two files that sinter would merge.

    Two files with the same circuit and the same metadata (e.g. one name in two subfolders) get one
    strong_id, so ``sinter combine`` would silently add their shots together.
    """
    ids: dict[tuple[str, str], str] = {}
    seen: dict[str, str] = {}
    for c in circuits:
        for decoder in decoders:
            sid = c.strong_id(decoder)
            if sid in seen:
                raise KilnError(
                    f"{c.path}: same circuit and metadata as {seen[sid]} (one sinter strong_id); "
                    "sinter would add their shots together: remove one of them"
                )
            seen[sid] = str(c.path)
            ids[(c.key, decoder)] = sid
    return ids


def discover_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike], *,
                    allow_tagged_gates: bool = False) -> list[CircuitFile]:
    """The circuits of ``--circuits DIR_OR_FILES...`` as ``sinter collect`` takes them: folders
    (searched as :func:`discover_circuits`), ``.stim`` files and glob patterns, with the same
    checks. A file's key is its name, a folder's files keep their paths inside it; two inputs
    giving one key are refused. Sorted by key.

    >>> discover_inputs(["no/such/*.stim"])
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: no/such/*.stim: the pattern matches no .stim file; check it
    """
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if len(items) == 1 and not pathlib.Path(items[0]).is_file() and not glob.has_magic(str(items[0])):
        return discover_circuits(items[0], allow_tagged_gates=allow_tagged_gates)
    found: list[CircuitFile] = []
    for item in items:
        text = str(item)
        path = pathlib.Path(text)
        if not path.exists() and glob.has_magic(text):
            matches = sorted(pathlib.Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix == ".stim"]
            if not files:
                raise KilnError(f"{text}: the pattern matches no .stim file; check it")
            found += [_read_circuit(f.parent, f, allow_tagged_gates) for f in files]
        elif path.is_dir():
            found += discover_circuits(path, allow_tagged_gates=allow_tagged_gates)
        elif path.is_file():
            if path.suffix != ".stim":
                raise KilnError(f"{text}: not a .stim file; pass stim circuit files or folders")
            found.append(_read_circuit(path.parent, path, allow_tagged_gates))
        else:
            raise KilnError(f"{text}: no such file or folder; pass .stim files or folders of them")
    by_key: dict[str, CircuitFile] = {}
    for c in found:
        other = by_key.setdefault(c.key, c)
        if other is not c and other.path != c.path:
            raise KilnError(f"{other.path} and {c.path} would both be {c.key!r} in the sweep; "
                            "pass their common folder instead")
    return sorted(by_key.values(), key=lambda c: c.key)

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
import json
import math
import os
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sinter
import stim

from qec_kiln._errors import KilnError, Log
from qec_kiln._storage import key_problem

#: Gates that tsim (bloqade-tsim) reinterprets when tagged, e.g. ``S[T] 0`` or ``I[R_Z(theta=0.1)] 0``.
#: Plain stim ignores the tag and would simulate a different circuit without a word.
TSIM_TAGGED_GATES = frozenset(
    {"S", "S_DAG", "I", "SQRT_X", "SQRT_X_DAG", "SQRT_Y", "SQRT_Y_DAG", "SPP", "SPP_DAG"}
)

#: sinter's built-in decoders that match on a graph: each error (each ``^``-separated part of a
#: decomposed one) may flip at most two detectors. pymatching 2.4 silently drops larger errors from
#: its graph and then fails (or guesses) while decoding; fusion_blossom raises on them.
MATCHING_DECODERS = frozenset({"pymatching", "pymatching-correlated", "fusion_blossom"})

# One DEM error line: ``error[tag](p) D0 D1 ^ D2 L0`` (stim escapes ']' inside tags).
_DEM_ERROR_RE = re.compile(r"^\s*error(?:\[[^\]]*\])?\([^)]*\)(.*)$")
#: Three detectors with no ``^`` between them (observables may be): a possible hyperedge.
_THREE_DETECTORS_RE = re.compile(r"D\d+[ \t]+(?:L\d+[ \t]+)*D\d+[ \t]+(?:L\d+[ \t]+)*D\d+")


def dem_for_circuit(circuit: stim.Circuit) -> stim.DetectorErrorModel:
    """The detector error model sinter builds for a task given without one.

    Same fallback chain as sinter 1.16 (``_fill_in_task``), so the DEM text, and so the task's
    ``strong_id``, match what ``sinter collect`` computes.

    Example:
        >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
        ...                            after_clifford_depolarization=0.01)
        >>> dem_for_circuit(c).num_detectors
        6
    """
    try:
        return circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    except ValueError:
        try:
            return circuit.detector_error_model(approximate_disjoint_errors=True)
        except ValueError:
            return circuit.detector_error_model(approximate_disjoint_errors=True, flatten_loops=True)


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
    metadata: Any  # a dict from the file name; any JSON value from a metadata index

    @functools.cached_property
    def circuit(self) -> stim.Circuit:
        return stim.Circuit(self.text)

    @functools.cached_property
    def dem(self) -> stim.DetectorErrorModel:
        """The detector error model exactly as sinter builds it for a task (with its fallbacks to
        an undecomposed model, which decoders such as chromobius accept)."""
        return dem_for_circuit(self.circuit)

    def task(self, decoder: str, masks: tuple[Any, Any] = (None, None)) -> sinter.Task:
        """The task sinter collect makes of this circuit with ``decoder`` and the
        postselection ``masks`` (``Postselection.masks``: detectors, observables)."""
        return sinter.Task(
            circuit=self.circuit,
            decoder=decoder,
            detector_error_model=self.dem,
            postselection_mask=masks[0],
            postselected_observables_mask=masks[1],
            json_metadata=self.metadata,
        )

    def strong_id(self, decoder: str, masks: tuple[Any, Any] = (None, None)) -> str:
        """The strong_id sinter will give this circuit with ``decoder`` (and ``masks``)."""
        return self.task(decoder, masks).strong_id()


def named_by_its_file(key: str, metadata: object) -> bool:
    """Whether ``sinter collect --metadata_func auto`` reads exactly ``metadata`` from the file
    name of ``key`` (decided at plan time, so that a node's run-batch need not import sinter).

    >>> named_by_its_file("sub/d=3,p=0.01.stim", {"d": 3, "p": 0.01})
    True
    >>> named_by_its_file("d=3.stim", {"d": 3.0}), named_by_its_file("task-1.stim", {"d": 3})
    (False, False)
    """
    try:
        found = sinter.comma_separated_key_values(key.rsplit("/", 1)[-1])
    except ValueError:
        return False
    return json.dumps(found) == json.dumps(metadata)


def discover_circuits(
    folder: str | pathlib.Path,
    *,
    allow_tagged_gates: bool = False,
    log: Log | None = None,
) -> list[CircuitFile]:
    """Every ``*.stim`` file under ``folder`` (recursively), sorted by key, validated.

    Symlinked folders are followed (each real folder once; ``log`` gets a ``warning:`` line for a
    link that leads to a folder already searched, e.g. a loop). Raises KilnError naming the folder
    or file, with what to do, for: a missing or empty folder, a folder without ``.stim`` files, a
    sub-folder that cannot be listed, a dangling symlink, a ``.stim`` that is not a regular file, a
    file that stim cannot parse, a circuit without observables or detectors, a name that
    ``--metadata_func auto`` cannot parse (or that repeats a key, or has a nan/inf value), two
    names with the same metadata written differently, and tsim-tagged gates (unless
    ``allow_tagged_gates``, i.e. a tsim sampler is configured).
    """
    root = pathlib.Path(folder)
    if not root.exists():
        raise KilnError(f"{folder}: no such folder; pass the folder that holds your .stim circuits")
    if not root.is_dir():
        raise KilnError(f"{folder}: not a folder; pass the folder that holds your .stim circuits")
    paths, others = _walk(root, log or (lambda _: None))
    if not paths:
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise KilnError(
                f"{folder}: no .stim files (found {len(others)} other files: {shown}); "
                "circuits must be stim circuit files ending in .stim"
            )
        raise KilnError(f"{folder}: the folder is empty; put your .stim circuits in it")
    if others and log is not None:  # a circuit saved as .txt or .stim.gz would be missed
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        log(f"warning: {folder}: skipped {len(others)} file(s) not ending in .stim: {shown}")
    index = read_metadata_index(root)
    circuits = [_read_circuit(root, p, allow_tagged_gates,
                              index.get(p.relative_to(root).as_posix(), _FROM_NAME))
                for p in sorted(paths)]
    _check_metadata_spellings(circuits)
    return circuits


def _walk(root: pathlib.Path, log: Log) -> tuple[list[pathlib.Path], list[str]]:
    """(``.stim`` paths, names of other files) under ``root``, hidden entries skipped.

    Symlinked folders are followed, each real folder once (loop protection). Nothing is skipped
    silently: what cannot be searched is refused, and a second route to a folder is logged.
    """
    stims: list[pathlib.Path] = []
    others: list[str] = []
    searched: dict[str, pathlib.Path] = {}  # real path -> the path it was searched under

    def visit(folder: pathlib.Path) -> None:
        real = os.path.realpath(folder)
        if real in searched:
            log(f"warning: {folder}: skipped, a link to {searched[real]}, which is searched "
                "already (a symlink loop or a second link to one folder)")
            return
        searched[real] = folder
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as ex:
            raise KilnError(
                f"{folder}: cannot list the folder ({ex.strerror}); its circuits would be missed: "
                "fix its permissions (chmod u+rx) or move it out of the sweep folder"
            ) from ex
        for entry in entries:
            if entry.name.startswith("."):  # .ipynb_checkpoints/, .git/, editor backups
                continue
            path = folder / entry.name
            if entry.is_symlink() and not path.exists():
                raise KilnError(
                    f"{path}: a symbolic link to {os.readlink(path)!r}, which does not exist (or "
                    "loops); fix or remove the link, or circuits behind it would be missed"
                )
            if entry.is_dir():
                visit(path)
            elif entry.name.endswith(".stim"):
                if not entry.is_file():
                    raise KilnError(
                        f"{path}: not a regular file ({_file_kind(path)}); a circuit must be a "
                        "regular .stim file: replace or remove it"
                    )
                stims.append(path)
            elif entry.is_file():
                others.append(entry.name)

    visit(root)
    return stims, sorted(others)


def _file_kind(path: pathlib.Path) -> str:
    """
    >>> _file_kind(pathlib.Path("/dev/null"))
    'a device'
    """
    if path.is_fifo():
        return "a FIFO"
    if path.is_socket():
        return "a socket"
    if path.is_block_device() or path.is_char_device():
        return "a device"
    return "not a file"


def _check_file_name(shown: str, name: str, metadata: dict) -> None:
    """Refuse names that sinter would read without complaint into surprising metadata.

    >>> _check_file_name("x", "d=3,p=0.001.stim", {"d": 3, "p": 0.001})
    >>> _check_file_name("x", "d=3,d=5.stim", {"d": 5})
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: x: key 'd' appears 2 times in the file name ...
    """
    keys = [term.split("=")[0] for term in name[: name.rindex(".")].split(",")]
    for key in keys:
        if keys.count(key) > 1:
            raise KilnError(
                f"{shown}: key {key!r} appears {keys.count(key)} times in the file name "
                f"(`--metadata_func auto` keeps only the last, {key}={metadata[key]!r}); "
                "rename it with each key once"
            )
    for key, value in metadata.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise KilnError(
                f"{shown}: {key}={value} is not a finite number (sinter would store it as "
                f"{json.dumps(value)}, which is not JSON, and cannot plot it); use a finite value"
            )


def _check_metadata_spellings(circuits: Sequence[CircuitFile]) -> None:
    """Refuse two files whose metadata are equal but written differently (key order, 3 vs 3.0).

    sinter's strong_id hashes the metadata's JSON text, so such files become separate tasks that
    look alike in every plot and table (and the same circuit would be counted as two).
    """
    first: dict[tuple, CircuitFile] = {}
    for c in circuits:
        if not isinstance(c.metadata, dict):
            continue  # any JSON value (metadata of an in-memory task): compared by strong_id
        canonical = tuple(sorted(c.metadata.items(), key=lambda kv: kv[0]))
        try:
            other = first.setdefault(canonical, c)
        except TypeError:  # unhashable values (lists): only names are checked here
            continue
        if json.dumps(other.metadata) != json.dumps(c.metadata):
            raise KilnError(
                f"{c.path}: the same metadata as {other.path}, written differently "
                f"({json.dumps(c.metadata)} vs {json.dumps(other.metadata)}); sinter would keep "
                "them as separate tasks that look alike: name both the same way (key order, "
                "3 vs 3.0)"
            )


#: A folder's metadata index (hidden: never a circuit): ``{"<key>": <json_metadata>, ...}`` for
#: circuits whose metadata is not their file name (``qec_kiln.collect`` of in-memory tasks).
METADATA_INDEX = ".qec-kiln-metadata.json"


def read_metadata_index(root: pathlib.Path) -> dict[str, object]:
    """The folder's :data:`METADATA_INDEX` ({} when it has none)."""
    try:
        data = json.loads((root / METADATA_INDEX).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as ex:
        raise KilnError(f"{root / METADATA_INDEX}: cannot read it ({ex}); remove it") from ex
    if not isinstance(data, dict):
        raise KilnError(f"{root / METADATA_INDEX}: not a JSON object of key -> metadata")
    return data


_FROM_NAME = object()  # no metadata given: read it from the file name


def _read_circuit(root: pathlib.Path, path: pathlib.Path, allow_tagged_gates: bool,
                  given: object = _FROM_NAME) -> CircuitFile:
    """One circuit file; its metadata from its name, or ``given`` (from the folder's index)."""
    shown = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as ex:
        raise KilnError(f"{shown}: cannot read the file ({ex}); fix its permissions or encoding") from ex
    if given is not _FROM_NAME:
        metadata: Any = given
    else:
        try:
            metadata = sinter.comma_separated_key_values(path.name)
        except ValueError as ex:
            raise KilnError(
                f"{shown}: the file name is not comma-separated key=value terms "
                "(like 'd=5,p=0.001,b=X,type=rotated_surface_memory.stim'); rename it so "
                "`sinter collect --metadata_func auto` can read its metadata"
            ) from ex
        _check_file_name(shown, path.name, metadata)
    key = path.relative_to(root).as_posix()
    problem = key_problem(key)
    if problem:
        raise KilnError(f"{shown}: its path {key!r} cannot name an object in the bucket "
                        f"({problem}); rename it")
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
        key=key,
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


def check_duplicates(circuits: Sequence[CircuitFile], decoders: Iterable[str],
                     masks: Mapping[str, tuple[Any, Any]] | None = None
                     ) -> dict[tuple[str, str], str]:
    """Strong ids of every (circuit key, decoder); refuse two files that sinter would merge.

    Two files with the same circuit and the same metadata (e.g. one name in two subfolders) get one
    strong_id, so ``sinter combine`` would silently add their shots together. ``masks``: each
    circuit key's postselection masks (:func:`postselection_masks`), part of the strong_id.
    """
    ids: dict[tuple[str, str], str] = {}
    seen: dict[str, str] = {}
    decoders = list(decoders)
    for c in circuits:
        for decoder in decoders:
            sid = c.strong_id(decoder, (masks or {}).get(c.key, (None, None)))
            if sid in seen:
                raise KilnError(
                    f"{c.path}: same circuit and metadata as {seen[sid]} (one sinter strong_id); "
                    "sinter would add their shots together: remove one of them"
                )
            seen[sid] = str(c.path)
            ids[(c.key, decoder)] = sid
    return ids


def first_hyperedge(dem: stim.DetectorErrorModel) -> str | None:
    r"""The first error of ``dem`` with a part (between ``^``) of more than two detectors, or None.

    Matching decoders (``MATCHING_DECODERS``) need every part to be an edge (two detectors) or a
    boundary edge (one). Searches the DEM's text (a regular expression finds the few candidate
    lines), so REPEAT blocks need no unrolling.

    >>> first_hyperedge(stim.DetectorErrorModel("error(0.125) D0 D1 ^ D2 L0\nerror(0.125) D2"))
    >>> first_hyperedge(stim.DetectorErrorModel("error(0.125) D0 D1\nerror(0.125) D0 D1 D2"))
    'error(0.125) D0 D1 D2'
    """
    text = str(dem)
    for found in _THREE_DETECTORS_RE.finditer(text):  # candidates, found in C: few or none
        end = text.find("\n", found.end())
        line = text[text.rfind("\n", 0, found.start()) + 1:end if end >= 0 else None]
        match = _DEM_ERROR_RE.match(line)
        if match and any(sum(t.startswith("D") for t in part.split()) > 2
                         for part in match.group(1).split("^")):
            return line.strip()
    return None


def check_decodable(circuits: Sequence[CircuitFile], decoders: Iterable[str]) -> None:
    """Refuse circuits that a chosen matching decoder cannot decode, before anything is uploaded.

    A circuit whose detector error model stim cannot decompose into graphlike errors (an error
    with three or more detectors) gets sinter's undecomposed model, which hypergraph decoders
    accept and matching decoders do not.
    """
    matching = [d for d in decoders if d in MATCHING_DECODERS]
    if not matching:
        return
    bad = [(c, err) for c in circuits if (err := first_hyperedge(c.dem)) is not None]
    if bad:
        c, err = bad[0]
        more = f" ({len(bad) - 1} more circuit(s) too)" if len(bad) > 1 else ""
        raise KilnError(
            f"{c.path}: --decoders {matching[0]} needs errors with at most 2 detectors, but stim "
            f"cannot decompose {err!r}{more}; use a hypergraph decoder (e.g. --decoders "
            "hypergraph_union_find, or chromobius / tesseract) or change the circuit's noise so "
            "its errors decompose"
        )


def discover_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike], *,
                    allow_tagged_gates: bool = False,
                    log: Log | None = None) -> list[CircuitFile]:
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
        return discover_circuits(str(items[0]), allow_tagged_gates=allow_tagged_gates, log=log)
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
            found += discover_circuits(path, allow_tagged_gates=allow_tagged_gates, log=log)
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

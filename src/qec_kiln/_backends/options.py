"""A backend's options and the flags derived from them, once.

``BackendOptions`` holds the settings every backend understands (``--processes``, ``--cpus``,
...); a backend's own settings are a subclass of it in its package's light ``options`` module,
each field declared with :func:`option`: its default, help, type and metavar. The flags come
from the fields: a backend's own flag is prefixed with its name (``--slurm-partition``,
``--skypilot-infra``), so two backends' flags cannot clash, and the old unprefixed spelling
stays as an alias (``--partition``) for as long as no other flag has it.

    >>> @dataclasses.dataclass(frozen=True)
    ... class FakeOptions(BackendOptions):
    ...     zone: str | None = option(help="where", aliases=("--zone",))
    >>> [(s.names, s.dest) for s in own_flags("fake", FakeOptions)]
    [(('--fake-zone', '--zone'), 'fake_zone')]
    >>> parser = argparse.ArgumentParser()
    >>> add_common_flags(parser)
    >>> add_own_flags(parser, "fake", FakeOptions)
    >>> options_from_args("fake", FakeOptions, parser.parse_args(["--zone", "z1", "--cpus", "8"]))
    FakeOptions(processes=None, sync_seconds=30.0, cpus='8', gpus=None, workers=None, zone='z1')
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from qec_kiln._argtypes import MAX_SYNC_SECONDS, SYNC_SECONDS, positive_int
from qec_kiln._argtypes import processes as processes_type
from qec_kiln._argtypes import sync_seconds as sync_seconds_type

_O = TypeVar("_O", bound="BackendOptions")

#: The key of a field's metadata that holds its :class:`Flag`.
FLAG = "qec_kiln.flag"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How an option field becomes a flag."""

    help: str = ""
    #: The flag's name after the backend's prefix (default: the field's name, dashes for
    #: underscores): ``time`` makes ``--slurm-time``.
    name: str | None = None
    #: Other spellings of the same flag, e.g. ``("--partition",)`` (today's names, kept).
    aliases: tuple[str, ...] = ()
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    #: argparse's action: None (a value), "store_true", "store_false" or "append".
    action: str | None = None


def option(default: Any = None, *, help: str, name: str | None = None,
           aliases: tuple[str, ...] = (), type: Callable[[str], Any] | None = None,
           metavar: str | None = None, action: str | None = None) -> Any:
    """A dataclass field of a backend's options together with its flag (see :class:`Flag`)."""
    flag = Flag(help=help, name=name, aliases=tuple(aliases), type=type, metavar=metavar,
                action=action)
    return dataclasses.field(default=default, metadata={FLAG: flag})


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """Settings every backend understands; each maps them onto its own terms (submitit's generic
    parameters). A backend's own settings live in a subclass (``LocalOptions``, ``SlurmOptions``).
    Their flags are unprefixed: every backend shares them.

    >>> BackendOptions(processes=4).sync_seconds
    30.0
    """

    processes: int | None = option(  # sinter --processes per batch (default: the node's cores)
        type=processes_type, metavar="N|auto",
        help="sinter --processes per batch (default auto: the cores it gets)")
    sync_seconds: float = option(  # how often run-batch uploads complete lines of its resume CSV
        SYNC_SECONDS, type=sync_seconds_type,
        help=f"how often a batch uploads its resume CSV (default {SYNC_SECONDS:g}, at most "
        f"{MAX_SYNC_SECONDS:g})")
    cpus: str | None = option(  # CPUs per node (SkyPilot, e.g. "16+") or per task (Slurm, "8")
        help="CPUs a batch gets: slurm per array task (e.g. 8), skypilot per node (e.g. 16+; "
        "default from the YAML)")
    gpus: str | None = option(  # accelerators, e.g. "H100:1"
        help="accelerators, e.g. H100:1 (skypilot: uses the GPU job YAML, "
        "configs/sinter_job_gpu.yaml)")
    workers: int | None = option(  # K: machines/slots that run batches at once, in turn
        type=positive_int, metavar="K",
        help="machines (local: slots) running batches at once; each takes the next batch when "
        "it is free, so there may be more batches than workers")


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One flag as argparse receives it: its spellings, its dest and the rest of its keywords."""

    field: str
    names: tuple[str, ...]
    dest: str
    kwargs: dict[str, Any]


COMMON_FIELDS = tuple(f.name for f in dataclasses.fields(BackendOptions))


def _flag(field: dataclasses.Field) -> Flag:
    return field.metadata.get(FLAG) or Flag()


def _kwargs(flag: Flag, default: Any, metavar: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"help": flag.help, "default": default}
    if flag.action in ("store_true", "store_false"):
        return {**kwargs, "action": flag.action}
    if flag.action:
        kwargs["action"] = flag.action
    if flag.type is not None:
        kwargs["type"] = flag.type
    return {**kwargs, "metavar": flag.metavar or metavar}


def common_flags() -> list[FlagSpec]:
    """The flags of :class:`BackendOptions`: ``--processes``, ``--sync-seconds``, ...; absent,
    they hold the fields' defaults."""
    out = []
    for f in dataclasses.fields(BackendOptions):
        flag = _flag(f)
        name = f"--{(flag.name or f.name).replace('_', '-')}"
        out.append(FlagSpec(f.name, (name, *flag.aliases), f.name,
                            _kwargs(flag, f.default, f.name.upper())))
    return out


def own_flags(backend: str, options_type: type[BackendOptions]) -> list[FlagSpec]:
    """The flags of a backend's own fields, ``--<backend>-<name>`` and their aliases (absent,
    they are not in the parsed namespace), and the aliases it adds to a common flag (a
    redeclared common field, e.g. the local backend's ``--parallel`` for ``--workers``)."""
    prefix = backend.replace("_", "-")
    out = []
    for f in dataclasses.fields(options_type):
        flag = _flag(f)
        if f.name in COMMON_FIELDS:
            common = _flag(next(c for c in dataclasses.fields(BackendOptions) if c.name == f.name))
            extra = tuple(a for a in flag.aliases if a not in common.aliases)
            if extra:
                out.append(FlagSpec(f.name, extra, f.name,
                                    _kwargs(flag, argparse.SUPPRESS, f.name.upper())))
            continue
        name = (flag.name or f.name).replace("_", "-")
        out.append(FlagSpec(f.name, (f"--{prefix}-{name}", *flag.aliases),
                            f"{backend}_{f.name}".replace("-", "_"),
                            _kwargs(flag, argparse.SUPPRESS, name.replace("-", "_").upper())))
    return out


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags every backend shares."""
    for spec in common_flags():
        parser.add_argument(*spec.names, dest=spec.dest, **spec.kwargs)


def add_own_flags(parser: argparse.ArgumentParser, backend: str,
                  options_type: type[BackendOptions]) -> None:
    """Add a backend's own flags as an argument group named after it. A spelling that the
    parser has already (another backend's alias, a flag of the command, or its ``--a_b``
    twin) is left out, so a
    backend can never break another's flags; a flag left with no spelling is said on stderr."""
    specs = own_flags(backend, options_type)
    if not specs:
        return
    taken = parser._option_string_actions  # argparse's own table of every spelling it knows
    group = parser.add_argument_group(backend)
    for spec in specs:
        names = [n for n in spec.names if n not in taken and _twin(n) not in taken]
        if not names:
            print(f"qec-kiln: warning: the {backend} backend's flag {spec.names[0]} is taken by "
                  "another flag; set its option through the Python API", file=sys.stderr)
            continue
        group.add_argument(*names, dest=spec.dest, **spec.kwargs)


def _twin(name: str) -> str:
    """The sinter-style spelling that qec-kiln's parser adds to a dashed flag.

    >>> _twin("--slurm-time")
    '--slurm_time'
    """
    return "--" + name[2:].replace("-", "_")


def options_from_args(backend: str, options_type: type[_O], args: argparse.Namespace) -> _O:
    """The backend's options from parsed flags: the common ones, then its own (absent flags,
    or a common one left None, take the field's default; an appended list becomes a tuple)."""
    values: dict[str, Any] = {}
    defaults = {f.name: f.default for f in dataclasses.fields(options_type)}
    for spec in common_flags() + own_flags(backend, options_type):
        value = getattr(args, spec.dest, None)
        if value is None:
            continue
        values[spec.field] = tuple(value) if isinstance(defaults[spec.field], tuple) else value
    return options_type(**values)

"""What every verb module shares: its parser class, sinter's spellings of its flags, the
console it prints on, the Python API's default ``log``, and how an error ends the command.

Every option accepts dashes or sinter-style underscores (``--max-shots`` or ``--max_shots``) and
numbers with underscores (``1_000_000``). A problem the user can fix ends the command with one
line ``error: ...`` naming the file or flag, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._errors import Exit, KilnError, KilnWarning

if TYPE_CHECKING:
    from rich.console import Console

PathLike = str | os.PathLike
Circuits = PathLike | Sequence[PathLike]  # a folder, or folders, .stim files and glob patterns


class Parser(argparse.ArgumentParser):
    """A verb's argparse parser whose errors are one line naming the verb."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def normalise(argv: Sequence[str], options: Collection[str]) -> list[str]:
    """``argv`` with sinter's spellings of ``options`` as the parser's: ``--max_shots`` is
    ``--max-shots``, and ``--sinter-option --flag`` is ``--sinter-option=--flag`` (argparse
    would take ``--flag`` for an option of its own). Only a word that names an option is
    rewritten: values, and every word after ``--``, are left as given.

    >>> normalise(["c/", "--max_shots=5", "--sinter_option", "--count_detection_events",
    ...            "--name", "a_b", "--", "--max_shots"], {"--max-shots", "--sinter-option", "--name"})
    ['c/', '--max-shots=5', '--sinter-option=--count_detection_events', '--name', 'a_b', '--', '--max_shots']
    """
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            out += [word, *words]
            break
        name, eq, value = word.partition("=")
        if name.startswith("--") and name not in options:
            dashed = "--" + name[2:].replace("_", "-")
            if any(o.startswith(dashed) for o in options):  # argparse takes a unique prefix
                name = dashed
        if name == "--sinter-option" and not eq:
            following = next(words, None)
            if following is not None and following.startswith("-"):
                out.append(f"{name}={following}")
                continue
            out += [name] if following is None else [name, following]
            continue
        out.append(name + eq + value)
    return out


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str],
               hint: Callable[[list[str]], str] | None = None) -> argparse.Namespace:
    """``argv`` parsed by ``parser`` after :func:`normalise`; an unknown flag is one error line
    naming the verb (with ``hint``'s advice, if any)."""
    options = {s for action in parser._actions for s in action.option_strings}
    args, extra = parser.parse_known_args(normalise(argv, options))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint(extra) if hint else ''}")
    return args


def run(handle: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``handle(args)``'s exit code; a :class:`KilnError` is one line ``error: ...`` (and
    ``{"error": ...}`` on standard output under ``--json``) with its exit code."""
    try:
        return handle(args)
    except BrokenPipeError:  # `qec-kiln status --json | head -1`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit flush does not fail again
        return Exit.BROKEN_PIPE
    except KilnError as ex:
        msg = str(ex).replace("\n", " ")
        if getattr(args, "json", False):
            print(json.dumps({"error": msg}))
        print(f"error: {msg}", file=sys.stderr)
        return ex.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Exit.for_signal(2)


def _console(stderr: bool) -> Console:
    """A rich console that ends like a plain print when its reader leaves (`qec-kiln plan |
    head -1`): through :func:`run`'s quiet exit 141, not rich's own exit 1."""
    from rich.console import Console

    class _Quiet(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Quiet(stderr=stderr, highlight=False, soft_wrap=True)


class _Lazy:
    """The console, made on first use: a verb that prints plain lines never imports rich."""

    def __init__(self, stderr: bool):
        self.stderr = stderr
        self.made: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self.made is None:
            self.made = _console(self.stderr)
        return getattr(self.made, name)


out: Any = _Lazy(stderr=False)
err: Any = _Lazy(stderr=True)


def say(line: str) -> None:
    """A progress or warning line of the command, on standard error."""
    err.print(line, markup=False)


def quiet(line: str) -> None:
    """The API's default ``log``: progress lines are dropped; a ``warning: ...`` line (e.g.
    flags a stored plan ignores) becomes a :class:`KilnWarning`, so a script still sees it,
    attributed to the caller's line."""
    if line.startswith("warning: "):
        import warnings

        warnings.warn(line[len("warning: "):], KilnWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside this package (as 3.12's skip_file_prefixes)."""
    import types

    here = os.path.dirname(os.path.dirname(__file__)) + os.sep  # qec_kiln/, not _command/
    frame: types.FrameType | None = sys._getframe(2)  # quiet's caller
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def numpy_on_one_thread() -> None:
    """Import numpy with its OpenBLAS on one thread (its thread per core spins at import, and
    a command does no heavy linear algebra), then give the environment back as it was, so that
    sinter's worker processes and backends start with the caller's."""
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]

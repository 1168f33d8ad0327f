"""The structure of the package and of its tests, checked from their imports.

The package: rooms by stage, each importing only downward, no import circle, no private name
taken from another module, one spelling per sweep setting (the API keyword, the SweepSpec field
and the flag's dest are one name), no backend named or reached into outside ``_backends/``, and
the dispatcher imported only by the entry point. The tests: a test module imports its helpers
from kiln_helpers.py, never from another test module or from conftest.py."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from qec_kiln._backends import BACKENDS
from qec_kiln._backends.registry import BUILT_IN
from qec_kiln._command._main import parse_args, verb_module
from qec_kiln._sweep.spec import API_ONLY, SweepSpec

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "qec_kiln"

#: Bottom to top: a module may import its own layer's modules and any layer below.
LAYERS = [
    {"_errors", "_atomic", "_argtypes", "_version", "_plugins"},
    {"_storage"},
    {"_sweep"},
    {"_planning"},
    {"_node"},
    {"_report"},
    {"_backends"},
    {"_prepare", "tsim"},
    {"_collect", "_command", "_view"},
    {"__main__", "__init__", "backends"},  # backends: the public face for third-party backends
]


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    room = _room(module)
    return next(i for i, rooms in enumerate(LAYERS) if room in rooms)


def _imports(path: pathlib.Path) -> list[tuple[str, list[str], bool]]:
    """(module, names, at module level?) of every qec_kiln import in ``path``, type-only ones
    left out."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qec_kiln"):
            out.append((node.module, [a.name for a in node.names], node.col_offset == 0))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.col_offset == 0) for a in node.names
                    if a.name.startswith("qec_kiln")]
    return out


FILES = sorted(SRC.rglob("*.py"))
MODULES = {_module(p) for p in FILES}


def _target(module: str, name: str) -> str:
    """The module an import names: ``from pkg import sub`` names the submodule."""
    return f"{module}.{name}" if f"{module}.{name}" in MODULES else module


def test_every_room_has_a_layer():
    rooms = {_room(_module(p)) for p in FILES}
    assert rooms <= set().union(*LAYERS), rooms - set().union(*LAYERS)


def test_imports_go_only_downward():
    upward = []
    for p in FILES:
        here = _module(p)
        for module, names, _ in _imports(p):
            for target in {_target(module, n) for n in names} or {module}:
                if target == "qec_kiln" and here != "qec_kiln":
                    upward.append(f"{here} -> qec_kiln (the package face)")
                elif _layer(target) > _layer(here):
                    upward.append(f"{here} -> {target}")
    assert upward == []


def test_no_import_circle():
    """Module-level and function-level imports alike: a depth-first search finds no cycle."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for p in FILES:
        here = _module(p)
        for module, names, _ in _imports(p):
            for target in {_target(module, n) for n in names} or {module}:
                if target in MODULES and target != here and not here.startswith(target + "."):
                    graph[here].add(target)  # a package's own face is not a circle
    state: dict[str, int] = {}
    circle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circle.extend(path[path.index(n):] + [n] if n in path else [m, n])
                return True
            if n not in state and visit(n, path + [n]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, [m]):
            break
    assert circle == []


def test_no_private_name_is_imported_from_another_module():
    found = [f"{_module(p)}: {module}.{n}" for p in FILES for module, names, _ in _imports(p)
             for n in names if n.startswith("_") and not n.startswith("__")
             and f"{module}.{n}" not in MODULES]
    assert found == []


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_each_sweep_setting_is_one_flag_of_the_same_name(command):
    """Adding a setting is a SweepSpec field plus its flag: the flag's dest is the field's name."""
    dests = {a.dest for a in verb_module(command).parser()._actions}
    # the backends' own flags, and the Python objects no flag can spell (custom_decoders)
    settings = set(SweepSpec.setting_names()) - {"backend_options"} - API_ONLY
    assert settings <= dests, settings - dests
    args = parse_args([command, "c/"])
    assert not settings & set(vars(args)) - {"backend"}  # absent flags keep the spec's defaults


# A comparison with a backend's name: `x == "local"`, `"slurm" != y`, `x in ("skypilot", ...)`.
_NAMES = "|".join(BACKENDS)
_COMPARES_A_NAME = re.compile(
    rf"""(==|!=|\bin)\s*[(\[{{]?\s*["']({_NAMES})["']|["']({_NAMES})["']\s*(==|!=)"""
)


def _python_files_outside_backends() -> list[pathlib.Path]:
    return [p for p in SRC.rglob("*.py") if "_backends" not in p.relative_to(SRC).parts]


def test_the_name_check_catches_what_the_old_code_did():
    for line in ('if spec.backend == "local":', 'return 16 if spec.backend == "skypilot" else 1',
                 'if backend.name != "local":', 'if "slurm" == name:'):
        assert _COMPARES_A_NAME.search(line), line
    assert not _COMPARES_A_NAME.search('backend: str = "local"')


def test_no_module_outside_the_backends_compares_a_backend_name():
    files = _python_files_outside_backends()
    assert len(files) > 10
    found = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
             for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if _COMPARES_A_NAME.search(line) or 'getattr(backend, "warning"' in line]
    assert found == []


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every qec_kiln module that ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qec_kiln"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("qec_kiln"))
    return out


def test_no_module_outside_the_backends_imports_a_backend_module():
    """Shared stages reach a backend only through the interface (``qec_kiln._backends``), never
    through one backend's modules (``local``, ``slurm``, ``skypilot``, ``skypilot.pool``, ...)."""
    modules = {f"qec_kiln._backends.{f.name}" for f in (SRC / "_backends").iterdir()
               if f.is_dir() and (f / "__init__.py").exists()}
    assert modules == {f"qec_kiln._backends.{name}" for name in BUILT_IN}
    found = {f"{p.relative_to(SRC)}: {m}" for p in _python_files_outside_backends()
             for m in _imported_modules(p) if any(m == x or m.startswith(x + ".") for x in modules)}
    assert found == set()


def test_only_the_entry_point_imports_the_dispatcher_and_no_verb_imports_it():
    importers = {p.name for p in SRC.rglob("*.py") if "qec_kiln._command._main" in _imported_modules(p)}
    assert importers <= {"__main__.py"}
    verbs = sorted((SRC / "_command").glob("_main_*.py"))
    assert len(verbs) == 12
    # one direction: dispatcher -> verbs
    assert [p.name for p in verbs if "qec_kiln._command._main" in _imported_modules(p)] == []


TESTS = pathlib.Path(__file__).resolve().parent


def _top_modules_imported(path: pathlib.Path) -> set[str]:
    """The first part of every module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
    return names


def test_no_test_module_imports_another_test_module_or_conftest():
    """Shared helpers live in kiln_helpers.py and fixtures in conftest.py and its plugin modules
    (fixtures_*.py), which pytest loads itself: a test module that imports another test module
    (or conftest.py) for a helper runs that module's import-time code and hides the helper where
    nobody looks for it."""
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 30
    found = {f"{p.relative_to(TESTS)}: {m}" for p in files for m in _top_modules_imported(p)
             if m == "conftest" or m.startswith("test_")}
    assert found == set(), found

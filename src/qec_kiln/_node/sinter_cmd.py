"""The ``sinter collect`` that run-batch runs: its exact argv, how it is started, and its
``--metadata_func``.

    >>> sinter_collect_argv([pathlib.Path("/w/a.stim")], decoders=["pymatching", "bposd"],
    ...     max_shots=10, max_errors=1, processes=1, resume_path=pathlib.Path("/w/r.csv"))[-14:-11]
    ['--decoders', 'pymatching', 'bposd']
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from qec_kiln._atomic import atomic_write
from qec_kiln._node.processes import Forked, die_with_parent, fork_call, fork_is_safe
from qec_kiln._sweep.manifest import Manifest


def sinter_executable() -> list[str]:
    """The ``sinter`` command of this Python environment."""
    beside = pathlib.Path(sys.executable).with_name("sinter")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("sinter")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from sinter._command._main import main; sys.exit(main())"]


def sinter_collect_argv(
    circuit_paths: list[pathlib.Path],
    *,
    decoders: Sequence[str],
    max_shots: int,
    max_errors: int,
    processes: int,
    resume_path: pathlib.Path,
    custom_decoders_module_function: str | None = None,
    extra: list[str] | None = None,
    max_batch_seconds: int | None = None,
    cpu_ids: Sequence[int] | None = None,
    metadata_func: str = "auto",
) -> list[str]:
    """The exact ``sinter collect`` argv of one run: every circuit with every decoder, at the
    same targets (absolute paths, so no name is an option).

    ``max_batch_seconds`` caps how long a sinter worker keeps results before it writes them to the
    resume file (sinter's default cap is 120 s, reached a few minutes into a task: every row a
    worker has not written yet is lost on SIGKILL, whatever the sync period). Flags in ``extra``
    come last, so a user's own ``--max_batch_seconds`` wins. ``cpu_ids``: the CPUs sinter pins
    its workers to (``--allowed_cpu_affinity_ids``; else it pins worker i to CPU i, see _workers).

    >>> argv = sinter_collect_argv([pathlib.Path("/w/d=3 $(x).stim")], decoders=["pymatching"],
    ...     max_shots=100, max_errors=10, processes=2, resume_path=pathlib.Path("/w/r.csv"))
    >>> argv[1:4]
    ['collect', '--circuits', '/w/d=3 $(x).stim']
    """
    argv = sinter_executable() + ["collect", "--circuits", *[str(p) for p in circuit_paths]]
    argv += ["--decoders", *decoders]
    if custom_decoders_module_function:
        argv += ["--custom_decoders_module_function", custom_decoders_module_function]
    argv += [
        "--max_shots", str(max_shots),
        "--max_errors", str(max_errors),
        "--processes", str(processes),
        "--save_resume_filepath", str(resume_path),
        "--metadata_func", metadata_func,
        "--quiet",
    ]
    if max_batch_seconds is not None:
        argv += ["--max_batch_seconds", str(max_batch_seconds)]
    if cpu_ids:
        argv += ["--allowed_cpu_affinity_ids", *map(str, cpu_ids)]
    argv += list(extra or [])
    return argv


def start_sinter(argv: list[str], log_fd: int, work: pathlib.Path,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen | Forked:
    """Start ``sinter collect`` (``argv``) in its own session in ``work``, dying with run-batch,
    with ``env`` added to its environment (e.g. where the shipped decoders are).

    Where this process has sinter imported already (a local run-batch forked by its launcher)
    and runs no other thread yet, sinter's own ``main`` runs in a forked child: the same
    ``sinter collect``, without a new interpreter importing sinter again (a quarter second).
    """
    if "sinter" in sys.modules and fork_is_safe():
        args = argv[len(sinter_executable()):]

        def collect() -> int:  # pragma: no cover - runs in the child
            import types

            from sinter._command._main import main

            # sinter's spawned workers re-import __main__: a bare one, as for the sinter command
            sys.modules["__main__"] = types.ModuleType("__main__")
            return main(command_line_args=args)

        return fork_call(collect, out=log_fd, cwd=work, env=env, die_with=os.getpid())
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                            start_new_session=True, cwd=work,
                            env={**os.environ, **env} if env else None,
                            preexec_fn=functools.partial(die_with_parent, os.getpid()))


#: sinter's ``--metadata_func`` for circuits whose metadata is not their file name: the JSON
#: beside each file (``<file>.json``, written by run-batch from the manifest; json.loads of
#: json.dumps keeps key order and 3 vs 3.0, so the strong_id is the planned one).
SIDECAR_METADATA_FUNC = ("__import__('json').loads(__import__('pathlib').Path(path + '.json')"
                         ".read_text())")


def metadata_func(manifest: Manifest, paths: Sequence[pathlib.Path], keys: Sequence[str]) -> str:
    """``auto`` when every circuit's metadata is its file name's (the usual case; the plan
    recorded it, so sinter is not imported here before sinter runs), else the sidecar reader,
    with each circuit's ``<file>.json`` written."""
    import json

    metadata = {k: manifest.circuit(k).metadata for k in keys}
    if manifest.metadata_from_names:
        return "auto"
    from qec_kiln._sweep.discover import named_by_its_file  # (imports sinter) not recorded

    if all(named_by_its_file(k, m) for k, m in metadata.items()):
        return "auto"
    for path, key in zip(paths, keys, strict=True):
        atomic_write(pathlib.Path(f"{path}.json"), json.dumps(metadata[key]).encode())
    return SIDECAR_METADATA_FUNC

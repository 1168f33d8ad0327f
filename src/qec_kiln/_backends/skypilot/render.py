"""Filling in and checking a SkyPilot task: the command line's resources (``--cpus``, ``--gpus``,
``--infra``, ``--no-spot``), the secrets a task declares, and SkyPilot's own schema and loader
(moved out of ``skypilot.py``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qec_kiln._backends.skypilot.sdk import _one_line, _parse_gpus, import_sky
from qec_kiln._errors import KilnError

if TYPE_CHECKING:
    from qec_kiln._backends.skypilot.backend import SkyPilotOptions

#: Infrastructure without spot instances (``use_spot`` must be false there).
NO_SPOT_INFRA = frozenset({"k8s", "kubernetes", "slurm", "ssh"})


def apply_options(
    cfg: dict[str, Any], opts: SkyPilotOptions, source: str, notes: list[str]
) -> bool:
    """Write --cpus/--gpus/--infra/--no-spot into ``cfg['resources']``; True if it changed."""
    res = cfg.get("resources")
    if res is None:
        res = {}
    if not isinstance(res, dict):
        raise KilnError(f"{source}: 'resources' must be a mapping, not a list or a value")
    before = copy.deepcopy(res)
    entries = [e for key in ("any_of", "ordered") for e in (res.get(key) or [])
               if isinstance(e, dict)]

    def put(key: str, value: Any, also_drop: Sequence[str] = ()) -> None:
        # Entries of any_of/ordered override the top level in SkyPilot; drop theirs so that
        # the command-line value wins everywhere.
        for d in (res, *entries):
            for k in (key, *also_drop):
                d.pop(k, None)
        res[key] = value

    if opts.cpus is not None:
        put("cpus", opts.cpus)
    if opts.gpus:
        put("accelerators", _parse_gpus(opts.gpus))
    if opts.infra:
        put("infra", opts.infra, also_drop=("cloud", "region", "zone"))
    use_spot = opts.use_spot
    if use_spot and opts.infra and opts.infra.split("/")[0].lower() in NO_SPOT_INFRA:
        notes.append(f"--infra {opts.infra} has no spot instances: use_spot set to false")
        use_spot = False
    if not use_spot:
        put("use_spot", False)
    if res != before:
        cfg["resources"] = res
        return True
    return False

def secret_names(cfg: dict[str, Any], source: str) -> list[str]:
    """Names for ``--secret NAME``: the YAML's null secrets; inline values are refused."""
    secrets = cfg.get("secrets")
    if not isinstance(secrets, dict):
        return []  # None, or the list form of provider-managed references: left to SkyPilot
    names = []
    for key, value in secrets.items():
        key = str(key)
        if key.startswith("secrets:"):
            continue  # a managed-secrets-provider reference
        if value is not None:
            raise KilnError(
                f"{source}: secret {key} has a value written in the YAML; set it to null "
                f"and export {key} in your environment (qec-kiln passes --secret {key})"
            )
        if key not in os.environ:
            raise KilnError(
                f"{source}: secret {key} is declared but not set in your environment; "
                "export it, or remove it from the YAML's secrets"
            )
        names.append(key)
    return names

def validate_task(
    cfg: dict[str, Any], env_overrides: list[tuple[str, str]], source: str, name: str
) -> None:
    """SkyPilot's own schema and task loader, offline; errors become one KilnError line."""
    sky = import_sky()  # slow import: only when validating
    from sky.utils import common_utils, schemas

    checked = copy.deepcopy(cfg)
    # SkyPilot's loader turns env/secret values into strings before its schema check
    # (sky/task.py from_yaml_config); do the same so `KILN_SYNC_SECONDS: 30` is accepted.
    for key in ("envs", "secrets"):
        if isinstance(checked.get(key), dict):
            checked[key] = {str(k): None if v is None else str(v)
                            for k, v in checked[key].items()}
    try:
        common_utils.validate_schema(
            checked, schemas.get_task_schema(), "invalid SkyPilot task YAML: "
        )
        sky.Task.from_yaml_config(copy.deepcopy(cfg), env_overrides=list(env_overrides))
        common_utils.check_cluster_name_is_valid(name)
    except Exception as e:  # SkyPilot raises ValueError, jsonschema and its own errors
        raise KilnError(f"{source}: {_one_line(e)}") from e

# ------------------------------------------------------------------ Backend API

"""Filling in and checking a SkyPilot task: the command line's resources (``--cpus``, ``--gpus``,
``--infra``, ``--no-spot``), the secrets a task declares (and that no secret value is written),
SkyPilot's own schema and loader, and the YAML it is written as.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from qec_kiln._backends.skypilot.options import SkyPilotOptions
from qec_kiln._backends.skypilot.sdk import import_sky, one_line
from qec_kiln._errors import KilnError

#: Infrastructure without spot instances (``use_spot`` must be false there).
NO_SPOT_INFRA = frozenset({"k8s", "kubernetes", "slurm", "ssh"})
# Names whose values are credentials; used only to check that no such value ever lands in a
# rendered file or a command line (the names themselves are fine).
_SECRET_NAME_RE = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY|SESSION|AUTH",
    re.IGNORECASE,
)


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
        put("accelerators", parse_gpus(opts.gpus))
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
        raise KilnError(f"{source}: {one_line(e)}") from e

# ------------------------------------------------------------------ Backend API


def parse_gpus(spec: str) -> str | dict[str, float | int]:
    """``"H100:1"`` stays a string; ``"H100:1,A100:1"`` becomes ``{"H100": 1, "A100": 1}``."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) <= 1:
        return spec.strip()
    out: dict[str, float | int] = {}
    for part in parts:
        gpu, _, count = part.partition(":")
        try:
            n = float(count) if count else 1
        except ValueError:
            raise KilnError(f"--gpus {spec!r}: {part!r} is not NAME or NAME:COUNT") from None
        out[gpu] = int(n) if float(n).is_integer() else n
    return out


def refuse_secret_values(source: str, yaml_text: str, argv: Sequence[str]) -> None:
    """Defense in depth: no credential value from the environment may appear in our output."""
    for key, value in os.environ.items():
        if len(value) < 8 or not (_SECRET_NAME_RE.search(key) or key.startswith("AWS_ACCESS")):
            continue
        if value in yaml_text or any(value in a for a in argv):
            raise KilnError(
                f"{source}: the value of ${key} would be written into the job YAML or the "
                f"command line; declare it under 'secrets: {{{key}: null}}' instead"
            )


class _LiteralDumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_presenter)


def dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.dump(cfg, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=100)

"""What a SkyPilot node installs and which identity it uses for the bucket, decided at launch.

Three ways to get qec-kiln onto a node, in the order ``launch`` picks them:

- ``--image docker:REF``: the image's qec-kiln; ``setup`` is dropped (the image holds everything);
- ``--kiln-pip-spec SPEC``: a published release from an index (``pip install --no-deps SPEC``);
- by default, a wheel of the launcher's own qec-kiln (``_ship.build_wheel``), sent with SkyPilot's
  ``file_mounts`` to ``~/.kiln/wheel/<file>.whl``.

In the last two cases ``setup`` also installs :func:`_ship.node_requirements` (never SkyPilot).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from qec_kiln._backends.skypilot import ship as _ship
from qec_kiln._errors import KilnError

#: Secrets that expire: SkyPilot captures a secret once and re-injects it on every recovery.
SHORT_LIVED_SECRETS = frozenset({"AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                                 "GOOGLE_OAUTH_ACCESS_TOKEN", "CLOUDSDK_AUTH_ACCESS_TOKEN"})


@dataclasses.dataclass
class NodeInstall:
    """The envs and file mounts that tell a node what to install, and a line saying so."""

    envs: list[tuple[str, str]]
    file_mounts: dict[str, str]
    summary: str


def apply_node_install(cfg: dict[str, Any], *, bucket_url: str, decoders: tuple[str, ...],
                       custom: str | None, image: str | None, pip_spec: str | None,
                       log=lambda _msg: None, python: str | None = None) -> NodeInstall:
    """Edit ``cfg`` (image, setup, file_mounts) and return what the node installs.
    ``python``: the ``major.minor`` the node's venv must have (a sweep's shipped decoder objects
    load only there; uv installs it), else the node's ``python3``."""
    if image:
        if not image.startswith("docker:"):
            raise KilnError(f"--image {image!r}: give a container image as docker:REGISTRY/NAME:TAG")
        res = cfg.setdefault("resources", {})
        for entry in [res, *(e for k in ("any_of", "ordered") for e in (res.get(k) or []))]:
            if isinstance(entry, dict):
                entry.pop("image_id", None)
        res["image_id"] = image
        cfg.pop("setup", None)
        envs = [("KILN_WHEEL", ""), ("KILN_PIP_SPEC", ""), ("KILN_NODE_REQUIREMENTS", ""),
                ("KILN_PYTHON", "")]
        return NodeInstall(envs, {}, f"nodes run the qec-kiln inside {image} (no setup)")
    reqs = _ship.node_requirements(bucket_url, decoders, custom)
    on = f" on Python {python} (uv installs it)" if python else ""
    if pip_spec:
        envs = [("KILN_WHEEL", ""), ("KILN_PIP_SPEC", pip_spec),
                ("KILN_NODE_REQUIREMENTS", " ".join(reqs)), ("KILN_PYTHON", python or "")]
        return NodeInstall(envs, {}, f"nodes install {pip_spec} (--no-deps) from their package "
                           f"index, and {' '.join(reqs)}{on}")
    wheel = _ship.build_wheel(log=log)
    mounts = cfg.get("file_mounts")
    if mounts is None:
        mounts = cfg["file_mounts"] = {}
    if not isinstance(mounts, dict):
        raise KilnError("the task YAML's file_mounts must be a mapping")
    mounts[wheel.remote_path] = str(wheel.path)
    envs = [("KILN_WHEEL", wheel.remote_path), ("KILN_PIP_SPEC", ""),
            ("KILN_NODE_REQUIREMENTS", " ".join(reqs)), ("KILN_PYTHON", python or "")]
    return NodeInstall(envs, {wheel.remote_path: str(wheel.path)},
                       f"nodes install {wheel.path.name} (--no-deps; this machine's qec-kiln, "
                       f"{wheel.origin}, sha256 {wheel.sha256[:12]}) from {wheel.path}, "
                       f"and from their package index: {' '.join(reqs)}{on}")


def node_identity(bucket_url: str, infra: str | None, secret_names: list[str],
                  home: Path | None = None) -> str:
    """Which identity the nodes use for the bucket; KilnError when they would have none.

    >>> node_identity("s3://b", "aws", [])
    'AWS VMs: the instance profile skypilot-v1 (S3 full access)'
    >>> node_identity("gs://b", "gcp/us-central1", [])
    'GCP VMs: the service account skypilot-v1 (storage admin)'
    >>> node_identity("s3://b", "k8s", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    'secrets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, copied from this environment at launch'
    """
    short = sorted(SHORT_LIVED_SECRETS & set(secret_names))
    if short:
        raise KilnError(
            f"secret {short[0]} expires, and SkyPilot re-injects it unchanged on every recovery; "
            "give nodes long-lived keys, or use a cloud whose VMs have their own identity "
            "(--infra aws for S3, --infra gcp for GCS)"
        )
    home = home or Path.home()
    cloud = (infra or "").split("/")[0].lower()
    if bucket_url.startswith("s3://"):
        keys = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        if keys <= set(secret_names):
            return (f"secrets {', '.join(sorted(keys))}, copied from this environment at launch")
        if cloud == "aws":
            return "AWS VMs: the instance profile skypilot-v1 (S3 full access)"
        shared = (home / ".aws" / "credentials").is_file() and not any(
            os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE"))
        if shared:
            where = "AWS VMs: the instance profile skypilot-v1; other clouds and Kubernetes"
            return f"{where}: ~/.aws/credentials, copied by SkyPilot" if not cloud else \
                "~/.aws/credentials, copied by SkyPilot"
        if not cloud:
            return ("AWS VMs: the instance profile skypilot-v1 (other clouds would have NO "
                    "identity for S3: pass --infra aws, or declare AWS keys as secrets)")
        raise KilnError(
            f"--infra {infra}: nodes there would have no identity for {bucket_url} (your AWS "
            "identity is not a ~/.aws/credentials file, so SkyPilot copies nothing); use --infra "
            "aws, or declare AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY under the task YAML's "
            "secrets (--yaml)"
        )
    if bucket_url.startswith("gs://"):
        if cloud == "gcp":
            return "GCP VMs: the service account skypilot-v1 (storage admin)"
        adc = home / ".config" / "gcloud" / "application_default_credentials.json"
        if adc.is_file():
            return "your gcloud application-default credentials, copied by SkyPilot"
        if not cloud:
            return ("GCP VMs: the service account skypilot-v1 (other clouds would have NO "
                    "identity for GCS: pass --infra gcp, or run `gcloud auth application-default "
                    "login`)")
        raise KilnError(
            f"--infra {infra}: nodes there would have no identity for {bucket_url}; use --infra "
            "gcp, or run `gcloud auth application-default login` so SkyPilot copies those files"
        )
    return "whatever the nodes' environment provides"

"""The SkyPilot backend's options."""

from __future__ import annotations

import dataclasses

from qec_kiln._backends.base import BackendOptions


@dataclasses.dataclass(frozen=True)
class SkyPilotOptions(BackendOptions):
    """The SkyPilot backend's options: the common ones (``cpus``/``gpus`` go into the task's
    ``resources``) and where the jobs run."""

    infra: str | None = None  # e.g. "aws", "gcp/us-central1", "k8s"
    use_spot: bool = True  # spot by default
    yaml_path: str | None = None  # task YAML to fill in (default configs/sinter_job*.yaml)
    kiln_pip_spec: str | None = None  # a published qec-kiln for the nodes instead of our wheel
    image: str | None = None  # docker:REF holding qec-kiln; drops setup
    pool: str | None = None  # with --workers: this pool's name instead of kiln-pool-<hash>
    keep_pool: bool = False  # status does not ask to take the pool down when the sweep is done

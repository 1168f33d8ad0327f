"""The SkyPilot backend's options (read without importing the backend); its flags are derived
from the fields (``--skypilot-infra``, alias ``--infra``)."""

from __future__ import annotations

import dataclasses

from qec_kiln._backends.options import BackendOptions, option


@dataclasses.dataclass(frozen=True)
class SkyPilotOptions(BackendOptions):
    """The SkyPilot backend's options: the common ones (``cpus``/``gpus`` go into the task's
    ``resources``) and where the jobs run."""

    infra: str | None = option(aliases=("--infra",), help="e.g. aws, gcp/us-central1, k8s")
    use_spot: bool = option(True, name="no-spot", aliases=("--no-spot",), action="store_false",
                            help="on-demand instead of spot")
    yaml_path: str | None = option(name="yaml", aliases=("--yaml",),
                                   help="your own copy of configs/sinter_job.yaml")
    kiln_pip_spec: str | None = option(
        aliases=("--kiln-pip-spec",), metavar="SPEC",
        help="nodes pip-install this published qec-kiln (e.g. 'qec-kiln==0.1.0') instead of a "
        "wheel of this machine's qec-kiln")
    image: str | None = option(aliases=("--image",), metavar="docker:REF",
                               help="container image with qec-kiln (docker/README.md); drops setup")
    pool: str | None = option(
        aliases=("--pool",), metavar="NAME",
        help="with --workers: use (or create) this SkyPilot pool instead of the one named after "
        "the install, kiln-pool-<hash>")
    keep_pool: bool = option(
        False, aliases=("--keep-pool",), action="store_true",
        help="with --workers: keep the pool when the sweep is done (idle workers bill; status "
        "then does not ask you to take it down)")

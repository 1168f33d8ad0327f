"""The SkyPilot backend's options and flags (read without importing the backend)."""

from __future__ import annotations

import argparse
import dataclasses

from qec_kiln._backends.options import BackendOptions


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("skypilot")
    g.add_argument("--infra", help="e.g. aws, gcp/us-central1, k8s")
    g.add_argument("--no-spot", action="store_true", help="on-demand instead of spot")
    g.add_argument("--yaml", help="your own copy of configs/sinter_job.yaml")
    g.add_argument("--kiln-pip-spec", metavar="SPEC",
                   help="nodes pip-install this published qec-kiln (e.g. 'qec-kiln==0.1.0') "
                   "instead of a wheel of this machine's qec-kiln")
    g.add_argument("--image", metavar="docker:REF",
                   help="container image with qec-kiln (docker/README.md); drops setup")
    g.add_argument("--pool", metavar="NAME",
                   help="with --workers: use (or create) this SkyPilot pool instead of the "
                   "one named after the install, kiln-pool-<hash>")
    g.add_argument("--keep-pool", action="store_true",
                   help="with --workers: keep the pool when the sweep is done (idle workers "
                   "bill; status then does not ask you to take it down)")


def options_from_args(args: argparse.Namespace) -> SkyPilotOptions:
    return SkyPilotOptions.from_args(args, infra=getattr(args, "infra", None),
                                     use_spot=not getattr(args, "no_spot", False),
                                     yaml_path=getattr(args, "yaml", None),
                                     kiln_pip_spec=getattr(args, "kiln_pip_spec", None),
                                     image=getattr(args, "image", None),
                                     pool=getattr(args, "pool", None),
                                     keep_pool=getattr(args, "keep_pool", False))

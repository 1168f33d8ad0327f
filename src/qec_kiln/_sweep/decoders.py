"""The sweep's decoders: known to sinter (or given by ``--custom-decoders-module-function``) and,
where batches run on this machine, importable here.

    >>> check_decoders(["pymatching"], None, run_here=False)
    >>> check_decoders(["pymatching", "pymatching"], None, run_here=False)
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: --decoders names 'pymatching' twice; give each decoder once
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from qec_kiln._errors import KilnError

#: Python packages (import names) a built-in sinter decoder needs on the machine that runs it.
DECODER_PACKAGES = {
    "pymatching": "pymatching",
    "pymatching-correlated": "pymatching",
    "fusion_blossom": "fusion_blossom",
    "hypergraph_union_find": "mwpf",
    "mw_parity_factor": "mwpf",
}
#: The PyPI distribution of each of those packages (what a node pip-installs).
DECODER_DISTS = {
    "pymatching": "pymatching",
    "pymatching-correlated": "pymatching",
    "fusion_blossom": "fusion-blossom",
    "hypergraph_union_find": "mwpf",
    "mw_parity_factor": "mwpf",
}
#: ``--custom-decoders-module-function`` modules and the PyPI distribution that provides them
#: (a module not here is looked up in this Python's installed distributions, else its name).
MODULE_DISTS = {
    "chromobius": "chromobius",  # chromobius:sinter_decoders (colour codes)
    "tesseract_decoder": "tesseract-decoder",  # tesseract_decoder:make_tesseract_sinter_decoders_dict
    "qec_kiln.tsim": "bloqade-tsim",  # qec_kiln.tsim:sinter_samplers
}

def check_decoders(decoders: Sequence[str], custom: Mapping[str, Any] | None, *, run_here: bool,
                   custom_spec: str | None = None) -> None:
    """Refuse unknown or repeated decoders before anything is planned. ``custom``: the dict that
    ``custom_spec`` gave (None where it could not be loaded here); ``run_here``: the batches run
    on this machine, so their decoders must import here."""
    if not decoders:
        raise KilnError("--decoders needs at least one decoder, e.g. --decoders pymatching")
    for i, d in enumerate(decoders):
        if d in decoders[:i]:
            raise KilnError(f"--decoders names {d!r} twice; give each decoder once")
    import sinter

    known = set(sinter.BUILT_IN_SAMPLERS) | set(custom or {})
    unknown_allowed = bool(custom_spec) and custom is None  # defined only on the nodes
    for d in decoders:
        if d not in known and not unknown_allowed:
            raise KilnError(
                f"--decoders {d!r} is not a sinter decoder; choose from {', '.join(sorted(known))}; "
                "or add --custom-decoders-module-function module:function"
            )
        pkg = DECODER_PACKAGES.get(d)  # found, not imported: the batch imports it (once)
        if pkg and run_here and importlib.util.find_spec(pkg) is None:
            raise KilnError(
                f"--decoders {d!r} needs the Python package {pkg!r}, which is not installed: "
                f"pip install {pkg.replace('_', '-')}"
            )


def decoder_runs_here(decoder: str, custom: Mapping[str, Any] | None) -> bool:
    """Whether ``decoder`` can decode on this machine: a custom ``sinter.Decoder`` that loaded
    here (not a ``sinter.Sampler``: those simulate rather than decode), or a built-in whose
    package is installed.

    >>> decoder_runs_here("pymatching", None), decoder_runs_here("not-a-decoder", {})
    (True, False)
    """
    import sinter

    if custom and decoder in custom:  # decoders are duck-typed (chromobius, tesseract)
        found = custom[decoder]
        return isinstance(found, sinter.Decoder) or hasattr(found, "compile_decoder_for_dem")
    if decoder not in sinter.BUILT_IN_SAMPLERS:
        return False
    pkg = DECODER_PACKAGES.get(decoder)
    return pkg is None or importlib.util.find_spec(pkg) is not None


def load_custom_decoders(spec: str | None, *, required: bool = True) -> dict | None:
    """The dict that ``--custom-decoders-module-function module:function`` gives sinter.

    With ``required=False`` a module that cannot be loaded here gives None (it may exist only on
    the nodes); otherwise it is a KilnError naming the flag.
    """
    if not spec:
        return None
    module, _, func = spec.partition(":")
    if not module or not func:
        raise KilnError(
            f"--custom-decoders-module-function {spec!r} must look like 'module:function'"
        )
    try:
        mod = importlib.import_module(module)
        return dict(getattr(mod, func)())
    except Exception as ex:  # any import-time failure of user code
        if required:
            raise KilnError(
                f"--custom-decoders-module-function {spec!r}: cannot load it here ({ex}); "
                "install the module in this environment"
            ) from ex
        return None

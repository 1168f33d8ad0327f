"""sinter's postselection flags, read the way ``sinter collect`` reads them, so that a task's
masks, and so its strong_id (the detector mask is part of it), are sinter's own.

``sinter collect`` (1.16, ``_command/_main_collect.py``) compiles
``--postselected_detectors_predicate EXPR`` into ``lambda index, metadata, coords: EXPR`` and
``--postselected_observables_predicate EXPR`` into ``lambda index, metadata: EXPR``, evaluates
them on every circuit with the metadata of ``--metadata_func`` (here: the file name, as
``auto``), and drops a mask that selects nothing. The nodes pass the same flags to sinter.

    >>> import stim
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2,
    ...                            after_clifford_depolarization=0.01)
    >>> p = Postselection(detectors_predicate="index < 2")
    >>> det, obs = p.masks(c, {"d": 3})
    >>> det.tolist(), obs
    ([3], None)
    >>> p.sinter_args()
    ['--postselected_detectors_predicate', 'index < 2']
    >>> Postselection(detectors_predicate="index <").check()
    Traceback (most recent call last):
    ...
    qec_kiln._errors.KilnError: --postselected-detectors-predicate 'index <' is not a Python expression ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from qec_kiln._errors import KilnError, Log


@dataclasses.dataclass(frozen=True)
class Postselection:
    """The sweep's postselection: sinter's three flags (None/False: off)."""

    detectors_predicate: str | None = None
    observables_predicate: str | None = None
    non_zero_4th_coord: bool = False

    @property
    def active(self) -> bool:
        return bool(self.detectors_predicate or self.observables_predicate
                    or self.non_zero_4th_coord)

    def sinter_args(self) -> list[str]:
        """The words every ``sinter collect`` of the sweep gets."""
        out: list[str] = []
        if self.non_zero_4th_coord:
            out.append("--postselect_detectors_with_non_zero_4th_coord")
        if self.detectors_predicate:
            out += ["--postselected_detectors_predicate", self.detectors_predicate]
        if self.observables_predicate:
            out += ["--postselected_observables_predicate", self.observables_predicate]
        return out

    def check(self) -> None:
        """Refuse what sinter collect would refuse, before anything is planned."""
        if self.non_zero_4th_coord and self.detectors_predicate:
            raise KilnError("--postselect-detectors-with-non-zero-4th-coord and "
                            "--postselected-detectors-predicate cannot be combined (sinter "
                            "refuses both); give one")
        self._functions()

    def _functions(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        det = obs = None
        if self.detectors_predicate:
            det = _compile("--postselected-detectors-predicate", self.detectors_predicate,
                           "index, metadata, coords")
        elif self.non_zero_4th_coord:
            det = lambda index, metadata, coords: coords[3]  # noqa: E731 - sinter's own
        if self.observables_predicate:
            obs = _compile("--postselected-observables-predicate", self.observables_predicate,
                           "index, metadata")
        return det, obs

    def masks(self, circuit: Any, metadata: Any, shown: str = "circuit") -> tuple[Any, Any]:
        """(detector mask, observable mask) of ``circuit`` exactly as sinter collect builds them
        (bit-packed uint8 arrays, or None where nothing is selected). ``shown`` names the
        circuit in an error."""
        import numpy as np
        from sinter._collection import post_selection_mask_from_predicate  # sinter's own

        det_pred, obs_pred = self._functions()
        det_mask = obs_mask = None
        try:
            if det_pred is not None:
                det_mask = post_selection_mask_from_predicate(
                    circuit, metadata=metadata, postselected_detectors_predicate=det_pred)
                if not np.any(det_mask):
                    det_mask = None
            if obs_pred is not None:
                chosen = [k for k in range(circuit.num_observables) if obs_pred(k, metadata)]
                # sinter 1.16 tests `any(chosen)`: observable 0 alone selects nothing. Kept, so
                # strong_ids stay sinter's (see observables_warning).
                if any(chosen):
                    obs_mask = np.zeros(shape=math.ceil(circuit.num_observables / 8),
                                        dtype=np.uint8)
                    for k in chosen:
                        obs_mask[k // 8] |= 1 << (k % 8)
        except Exception as ex:  # the user's expression, on this circuit's values
            raise KilnError(f"{shown}: a postselection predicate failed on it "
                            f"({type(ex).__name__}: {ex}); fix the expression") from ex
        return det_mask, obs_mask

    def observables_warning(self, circuit: Any, metadata: Any) -> str | None:
        """A warning when the observables predicate selects only observable 0, which sinter
        1.16 then ignores (it tests ``any()`` of the selected indices)."""
        obs_pred = self._functions()[1]
        if obs_pred is None:
            return None
        chosen = [k for k in range(circuit.num_observables) if obs_pred(k, metadata)]
        if chosen == [0]:
            return ("--postselected-observables-predicate selects only observable 0, which "
                    "sinter 1.16 ignores (it tests any() of the chosen indices): nothing is "
                    "postselected on observables, exactly as plain `sinter collect` does")
        return None


def postselection_masks(post: Postselection, circuits: Sequence[Any],
                        log: Log | None = None) -> dict[str, tuple[Any, Any]]:
    """Each circuit's (detector, observable) masks by its key ({} without postselection), the
    circuits being ``CircuitFile`` s (key, circuit, metadata, path). A predicate that selects
    nothing on any circuit is worth a ``warning:`` line to ``log``: it was probably mistyped."""
    if not post.active:
        return {}
    post.check()
    out = {c.key: post.masks(c.circuit, c.metadata, str(c.path)) for c in circuits}
    say = log or (lambda _: None)
    detectors = bool(post.detectors_predicate or post.non_zero_4th_coord)
    if detectors and all(det is None for det, _ in out.values()):
        say("warning: the detector postselection selects no detector of any circuit "
                "(sinter then postselects nothing); check the predicate and the circuits' "
                "detector coordinates")
    for c in circuits[:1]:
        if (warning := post.observables_warning(c.circuit, c.metadata)) is not None:
            say("warning: " + warning)
    return out


def _compile(flag: str, expr: str, params: str) -> Callable[..., Any]:
    import numpy as np
    import sinter
    import stim

    try:
        code = compile(f"lambda {params}: {expr}", filename=f"{flag}:command_line_arg",
                       mode="eval")
    except SyntaxError as ex:
        raise KilnError(f"{flag} {expr!r} is not a Python expression ({ex.msg}); e.g. "
                        f"{flag} \"coords[2] == 0\"") from None
    # The names sinter's own module gives the expression (it evaluates it in its globals).
    return eval(code, {"math": math, "np": np, "stim": stim, "sinter": sinter})


__all__ = ["Postselection", "postselection_masks"]

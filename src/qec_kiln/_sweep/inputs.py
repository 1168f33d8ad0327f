"""A sweep's inputs, read and checked in one pass: its decoders, circuits, postselection masks,
strong_ids, --existing-data files and the digest that names the sweep. Planning starts from this.

    >>> import pathlib, tempfile, stim
    >>> from qec_kiln._sweep.spec import SweepSpec
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...                            after_clifford_depolarization=0.01)
    >>> _ = (tmp / "d=3.stim").write_text(str(c))
    >>> found = read_inputs(SweepSpec.build(tmp, {}), run_here=True, log=lambda line: None)
    >>> [e.metadata for e in found.entries], len(found.tasks), len(found.digest)
    ([{'d': 3}], 1, 64)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qec_kiln._errors import KilnError, Log
from qec_kiln._sweep.decoders import check_decoders, decoder_runs_here, load_custom_decoders
from qec_kiln._sweep.discover import (
    CircuitFile,
    check_decodable,
    check_duplicates,
    discover_inputs,
    named_by_its_file,
)
from qec_kiln._sweep.existing import ExistingFile, read_existing_file
from qec_kiln._sweep.manifest import CircuitEntry, inputs_digest
from qec_kiln._sweep.postselect import postselection_masks
from qec_kiln._sweep.shipped import Shipment, pack
from qec_kiln._sweep.spec import SweepSpec


@dataclasses.dataclass(frozen=True)
class SweepInputs:
    """Everything a plan needs from the inputs, each read once."""

    circuits: list[CircuitFile]
    decoders: list[str]
    custom: dict | None  # custom_decoders, or the --custom-decoders-module-function dict
    masks: Any  # postselection masks per circuit (as sinter builds them)
    strong_ids: dict[tuple[str, str], str]  # (circuit key, decoder) -> strong_id
    files: list[ExistingFile]  # --existing-data CSVs
    entries: list[CircuitEntry]
    sinter_args: list[str]
    digest: str
    runs_here: frozenset[str]  # the decoders that can decode on this machine
    metadata_from_names: bool  # every circuit's metadata is its file name's (as sinter reads it)
    shipped: Shipment | None = None  # the custom_decoders objects the nodes get, pickled

    @property
    def tasks(self) -> dict[str, tuple[str, str]]:
        """strong_id -> (circuit key, decoder)."""
        return {sid: key for key, sid in self.strong_ids.items()}


def read_inputs(spec: SweepSpec, *, run_here: bool, log: Log) -> SweepInputs:
    """Check the targets and decoders, discover the circuits and their strong_ids, read the
    --existing-data files and digest it all; one clear KilnError for any bad input.
    ``run_here``: the batches run on this machine, so the decoders must load here."""
    inputs, targets = spec.inputs, spec.targets
    if targets.max_shots < 1 or targets.max_errors < 1:
        raise KilnError("--max-shots and --max-errors must be positive integers")
    if targets.fresh and targets.existing_data:
        raise KilnError("--fresh counts no existing rows: it cannot be given with --existing-data")
    if targets.merge_existing_data and not targets.existing_data:
        raise KilnError("--merge-existing-data needs --existing-data CSV...")
    if inputs.custom_decoders and inputs.custom_decoders_module_function:
        raise KilnError(
            "custom_decoders (objects) and custom_decoders_module_function "
            f"({inputs.custom_decoders_module_function}) cannot be combined: sinter on the nodes "
            "takes one --custom_decoders_module_function; put every custom decoder in one of them"
        )
    custom = (dict(inputs.custom_decoders) if inputs.custom_decoders else
              load_custom_decoders(inputs.custom_decoders_module_function,
                                   required=run_here or spec.partition.calibrate))
    check_decoders(inputs.decoders, custom, run_here=run_here,
                   custom_spec=inputs.custom_decoders_module_function)
    decoders = list(inputs.decoders)
    shipment = pack(inputs.custom_decoders, decoders) if inputs.custom_decoders else None
    shipped = shipment if shipment is not None and shipment.record.objects else None
    if shipped is not None and custom is not None:
        from qec_kiln._sweep.shipped_objects import wrap  # (imports sinter)

        # Pickled by value for the planner's pilots too (sinter spawns their worker).
        custom.update({o.name: wrap(custom[o.name], shipped.blobs[o.sha256])
                       for o in shipped.record.objects})
    circuits = discover_inputs(  # a custom sampler may read tagged gates (qec_kiln.tsim's do)
        spec.circuits, allow_tagged_gates=bool(inputs.custom_decoders_module_function or shipped),
        log=log
    )
    check_decodable(circuits, decoders)
    masks = postselection_masks(inputs.postselection, circuits, log)
    strong_ids = check_duplicates(circuits, decoders, masks)
    files = [read_existing_file(path, {sid: f"{k} ({d})" for (k, d), sid in strong_ids.items()})
             for path in targets.existing_data]
    entries = [CircuitEntry(c.key, c.sha256, c.metadata) for c in circuits]
    use = "merged" if targets.merge_existing_data else "counted"
    sinter_args = inputs.sinter_args(targets.custom_error_count_key)
    digest = inputs_digest(entries, decoders, targets.max_shots, targets.max_errors,
                           inputs.custom_decoders_module_function, sinter_args,
                           existing_data={f.sha256: use for f in files},
                           shipped=shipped.record.digests() if shipped else None,
                           task_targets=targets.task_targets)
    return SweepInputs(circuits, decoders, custom, masks, strong_ids, files, entries,
                       sinter_args, digest,
                       frozenset(d for d in decoders if decoder_runs_here(d, custom)),
                       all(named_by_its_file(c.key, c.metadata) for c in circuits), shipped)

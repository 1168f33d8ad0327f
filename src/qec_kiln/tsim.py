"""Sample Clifford+T circuits with tsim (bloqade-tsim) under the unmodified ``sinter collect``.

tsim reads stim circuit text in which some gates carry tags, e.g. ``S[T] 0`` (a T gate) or
``I[R_Z(theta=0.1*pi)] 0``. Plain stim accepts those tags and ignores them, so ``sinter collect``
with a stim-based decoder would silently simulate a different (Clifford) circuit. This module gives
sinter a :class:`sinter.Sampler` that simulates the circuit with tsim instead, then decodes::

    sinter collect --circuits c/*.stim --metadata_func auto --decoders tsim \\
        --custom_decoders_module_function qec_kiln.tsim:sinter_samplers \\
        --max_shots 100000 --max_errors 1000 --processes 1 --save_resume_filepath out.csv

    qec-kiln launch c/ --decoders tsim \\
        --custom-decoders-module-function qec_kiln.tsim:sinter_samplers

``import qec_kiln.tsim`` and :func:`sinter_samplers` work without tsim or JAX (sinter's main
process and ``qec-kiln launch`` only need the names); tsim and JAX are imported when a task is
compiled in a sinter worker, which then fails with ``pip install bloqade-tsim`` if they are missing.

What a compiled task does:

1. **Reference.** tsim reports raw detector and observable values, stim reports their flips
   relative to the noiseless circuit. One batch of the circuit is sampled *without noise*: every
   detector and observable must be the same in every shot (otherwise the circuit has no
   meaningful "flip" and the task is refused: T gates can make a detector random that plain stim
   thinks deterministic), and that noiseless sample is XORed onto every noisy shot, so the decoder
   gets stim-convention data.
2. **Sampling.** tsim compiles the noisy circuit to a JAX program; a JAX program is compiled again
   for every new batch shape, and sinter asks for 1, 2, 4, ... shots while it ramps up, so tsim is
   always called with one fixed ``batch_size`` (``QEC_KILN_TSIM_BATCH_SIZE``, default 8192, or
   65536 on a GPU) and whole batches are sampled; shots beyond what sinter asked for are kept
   for its next call, so sinter gets exactly the shots it asked for and ``--max_shots`` holds.
3. **Decoding.** The decoder (pymatching by default) is built from ``task.detector_error_model``:
   the detector error model that sinter itself derives from the circuit with stim
   (``decompose_errors=True, approximate_disjoint_errors=True``), i.e. with the tags ignored.

Why that detector error model: it is the Clifford (Pauli-frame) noise model of the circuit, which
is what a decoder of a real device would be built from: decoders match Pauli errors and know
nothing of T gates. tsim's own ``Circuit.detector_error_model`` is the same stim analysis (it only
adds support for non-deterministic observables, which the noiseless check above refuses anyway).
Using it keeps the decoder identical to the one ``sinter collect`` would build for the circuit, and
it is the model that enters sinter's strong_id. The difference between tsim's truth and that
model (e.g. an X error before a T-dagger becomes a non-Pauli S-dagger error) is exactly what
the simulation measures.

Settings (environment variables, read in the worker; none of them enters the strong_id, so CPU
and GPU nodes of one sweep add up in ``sinter combine``):

- ``QEC_KILN_TSIM_BATCH_SIZE``: shots per JAX batch (capped by tsim's memory estimate).
- ``JAX_PLATFORMS``: JAX's own switch; ``cpu`` forces the CPU, ``cuda`` makes a node whose GPU
  is not usable fail instead of quietly sampling on its CPU.
- ``XLA_PYTHON_CLIENT_PREALLOCATE``: set to ``false`` here unless you set it, so several sinter
  worker processes can share one GPU (JAX would otherwise reserve 75% of it per process).

There is a single sampler name, ``tsim``: the decoder name is part of sinter's strong_id, so a
second name for the GPU (``tsim-gpu``) would split one experiment into two rows. The device is
JAX's choice (a GPU when ``jax[cuda12]`` is installed and sees one).
"""

from __future__ import annotations

import collections
import math
import os
import time
from typing import Any

import numpy as np
import sinter
import stim

__all__ = [
    "CompiledTsimSampler",
    "DEFAULT_BATCH_SIZE_CPU",
    "DEFAULT_BATCH_SIZE_GPU",
    "NOISELESS_CHECK_SHOTS",
    "TsimNotInstalledError",
    "TsimSampler",
    "jax_backend",
    "sinter_samplers",
]

#: Shots per JAX batch on a CPU: a middle ground measured on 2 cores (light circuits gain from
#: larger batches, heavy ones lose; see docs/gpu.md).
DEFAULT_BATCH_SIZE_CPU = 8192
#: Shots per JAX batch on a GPU (a GPU needs big batches to be busy).
DEFAULT_BATCH_SIZE_GPU = 65536
#: Shots of the noiseless circuit sampled to find (and check) the reference sample when tsim's
#: internals are not available (otherwise one whole batch is).
NOISELESS_CHECK_SHOTS = 255
#: Upper bound on the whole batches sampled in one call, whatever sinter asks for.
MAX_BATCHES_PER_CALL = 64

INSTALL_HINT = (
    "the tsim sampler needs bloqade-tsim and JAX: pip install bloqade-tsim "
    "(on a GPU node: pip install 'bloqade-tsim[cuda12]')"
)


class TsimNotInstalledError(ImportError):
    """bloqade-tsim (or JAX) is not installed where a tsim task is being compiled."""


def _import_tsim() -> Any:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax  # noqa: F401
        import tsim
    except ImportError as ex:
        raise TsimNotInstalledError(f"{INSTALL_HINT} ({ex})") from ex
    return tsim


def jax_backend() -> str:
    """The platform JAX samples on here (``cpu``, ``gpu``, ...); imports JAX."""
    _import_tsim()
    import jax

    return jax.default_backend()


def _default_batch_size() -> int:
    text = os.environ.get("QEC_KILN_TSIM_BATCH_SIZE", "").strip()
    if text:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"QEC_KILN_TSIM_BATCH_SIZE={text!r}: must be a positive integer")
        return value
    return DEFAULT_BATCH_SIZE_GPU if jax_backend() == "gpu" else DEFAULT_BATCH_SIZE_CPU


class TsimSampler(sinter.Sampler):
    """A :class:`sinter.Sampler` that simulates each task's circuit with tsim, then decodes it.

    Args:
        decoder: a sinter decoder name (``"pymatching"``, ``"fusion_blossom"``, ...; see
            ``sinter.BUILT_IN_DECODERS``) or a :class:`sinter.Decoder` implementing
            ``compile_decoder_for_dem``. It is built from ``task.detector_error_model``.
        batch_size: shots per tsim/JAX batch; default ``QEC_KILN_TSIM_BATCH_SIZE`` or 8192 on a
            CPU, 65536 on a GPU.
        seed: tsim's seed for every task (tests only: all workers would then draw the same
            shots). ``None`` (the default) draws a fresh seed per compiled task.

    The object holds only these settings, so sinter can pickle it into its worker processes.
    """

    def __init__(
        self,
        decoder: str | sinter.Decoder = "pymatching",
        *,
        batch_size: int | None = None,
        seed: int | None = None,
    ):
        if isinstance(decoder, str) and decoder not in sinter.BUILT_IN_DECODERS:
            raise ValueError(
                f"decoder {decoder!r} is not one of sinter's decoders "
                f"({', '.join(sorted(sinter.BUILT_IN_DECODERS))}); pass a sinter.Decoder instead"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.decoder = decoder
        self.batch_size = batch_size
        self.seed = seed

    def __repr__(self) -> str:
        return f"TsimSampler(decoder={self.decoder!r}, batch_size={self.batch_size!r})"

    def compiled_sampler_for_task(self, task: sinter.Task) -> sinter.CompiledSampler:
        return CompiledTsimSampler(
            task, decoder=self.decoder, batch_size=self.batch_size, seed=self.seed
        )


class CompiledTsimSampler(sinter.CompiledSampler):
    """One task compiled for tsim: noiseless reference, noisy JAX program, decoder."""

    def __init__(
        self,
        task: sinter.Task,
        *,
        decoder: str | sinter.Decoder = "pymatching",
        batch_size: int | None = None,
        seed: int | None = None,
    ):
        tsim = _import_tsim()
        circuit = task.circuit
        if circuit is None:
            circuit = stim.Circuit.from_file(task.circuit_path)
        dem = task.detector_error_model
        if dem is None:
            dem = circuit.detector_error_model(
                decompose_errors=True, approximate_disjoint_errors=True
            )
        self.task = task
        self.num_dets = circuit.num_detectors
        self.num_obs = circuit.num_observables
        if self.num_obs == 0:
            raise ValueError("the circuit has no OBSERVABLE_INCLUDE: nothing to count")
        self.batch_size = batch_size if batch_size is not None else _default_batch_size()

        t_circuit = tsim.Circuit.from_stim_program(circuit)
        rng_seed = seed if seed is not None else int(np.random.default_rng().integers(2**30))
        self._sampler = t_circuit.compile_detector_sampler(seed=rng_seed)
        # tsim's estimate of the largest batch that fits in memory (private; absent = no cap).
        estimate = getattr(self._sampler, "_estimate_batch_size", None)
        if callable(estimate):
            self.batch_size = max(1, min(self.batch_size, int(estimate())))
        noiseless = _noiseless_samples(self._sampler, t_circuit, self.batch_size, rng_seed)
        self._ref_dets, self._ref_obs = _reference(noiseless, self.num_dets)

        dec = sinter.BUILT_IN_DECODERS[decoder] if isinstance(decoder, str) else decoder
        try:
            self._decoder = dec.compile_decoder_for_dem(dem=dem)
        except NotImplementedError:
            raise ValueError(
                f"decoder {decoder!r} has no compile_decoder_for_dem; the tsim sampler "
                "needs an in-memory decoder such as pymatching"
            ) from None

        self._post_mask = task.postselection_mask
        self._post_obs_mask = task.postselected_observables_mask
        # Shots sampled but not yet handed to sinter (bit-packed, stim convention).
        self._dets = np.zeros((0, (self.num_dets + 7) // 8), dtype=np.uint8)
        self._obs = np.zeros((0, (self.num_obs + 7) // 8), dtype=np.uint8)
        # JAX compiles the program on its first batch (seconds): do it here, like stim's and the
        # decoder's set-up, so sinter's `seconds` count sampling only. The batch is kept.
        self._top_up(1)

    def __repr__(self) -> str:
        return f"CompiledTsimSampler(batch_size={self.batch_size}, decoder={self._decoder!r})"

    def _top_up(self, shots: int) -> None:
        """Sample whole batches until at least ``shots`` shots are buffered."""
        missing = shots - len(self._dets)
        if missing <= 0:
            return
        batches = min(MAX_BATCHES_PER_CALL, math.ceil(missing / self.batch_size))
        dets, obs = self._sampler.sample(
            batches * self.batch_size,
            batch_size=self.batch_size,
            separate_observables=True,
            bit_packed=True,
        )
        dets = np.asarray(dets, dtype=np.uint8) ^ self._ref_dets
        obs = np.asarray(obs, dtype=np.uint8) ^ self._ref_obs
        self._dets = np.concatenate([self._dets, dets]) if len(self._dets) else dets
        self._obs = np.concatenate([self._obs, obs]) if len(self._obs) else obs

    def sample(self, suggested_shots: int) -> sinter.AnonTaskStats:
        t0 = time.monotonic()
        want = max(1, min(int(suggested_shots), MAX_BATCHES_PER_CALL * self.batch_size))
        self._top_up(want)
        want = min(want, len(self._dets))
        dets, self._dets = self._dets[:want], self._dets[want:]
        obs, self._obs = self._obs[:want], self._obs[want:]

        discards = 0
        if self._post_mask is not None:
            hit = np.any(dets & self._post_mask, axis=1)
            discards = int(np.count_nonzero(hit))
            if discards:
                dets, obs = dets[~hit], obs[~hit]
        errors = 0
        if len(dets):
            predictions = self._decoder.decode_shots_bit_packed(
                bit_packed_detection_event_data=np.ascontiguousarray(dets)
            )
            more_discards, errors = _classify(obs, predictions, self._post_obs_mask)
            discards += more_discards
        return sinter.AnonTaskStats(
            shots=want,
            errors=errors,
            discards=discards,
            seconds=time.monotonic() - t0,
            custom_counts=collections.Counter(),
        )


def _noiseless_samples(sampler: Any, t_circuit: Any, batch_size: int, seed: int) -> np.ndarray:
    """Shots of the circuit without its noise: bool array (shots, detectors + observables).

    Fast path: one batch of the compiled noisy program with every error variable set to 0 (what
    tsim itself does for its one-shot reference sample). It has the shape of the noisy batches,
    so it costs no JAX compilation of its own. It uses tsim internals (``_program``,
    ``_channel_sampler``, ``sample_program``; bloqade-tsim 0.1.5); without them, the public API
    compiles the noiseless circuit separately (a few seconds more per task).
    """
    try:
        import jax
        import jax.numpy as jnp
        from tsim.sampler import sample_program

        program = sampler._program
        num_f = int(sampler._channel_sampler.signature_matrix.shape[1])
    except (ImportError, AttributeError):
        quiet = t_circuit.without_noise().compile_detector_sampler(seed=seed)
        n = NOISELESS_CHECK_SHOTS
        return np.asarray(quiet.sample(n, batch_size=n, append_observables=True), dtype=bool)
    zeros = jnp.zeros((batch_size, num_f), dtype=jnp.uint8)
    return np.asarray(sample_program(program, zeros, jax.random.key(seed)), dtype=bool)


def _reference(noiseless: np.ndarray, num_dets: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit-packed (detectors, observables) of the noiseless shots; refuse random ones."""
    dets, obs = noiseless[:, :num_dets], noiseless[:, num_dets:]
    for name, prefix, values in (("detector", "D", dets), ("observable", "L", obs)):
        varying = np.flatnonzero(np.any(values != values[:1], axis=0))
        if varying.size:
            shown = ", ".join(f"{prefix}{k}" for k in varying[:5])
            raise ValueError(
                f"{len(varying)} {name}(s) ({shown}{', ...' if varying.size > 5 else ''}) are "
                f"random in the noiseless circuit as tsim simulates it: each {name} must have "
                "one value in every noiseless shot for its flips to be decoded (check where the "
                "T / non-Clifford gates sit relative to the detectors and observables)"
            )
    ref_dets = np.packbits(dets[0], bitorder="little").astype(np.uint8)
    ref_obs = np.packbits(obs[0], bitorder="little").astype(np.uint8)
    return ref_dets, ref_obs


def _classify(
    actual_obs: np.ndarray, predictions: np.ndarray, post_obs_mask: np.ndarray | None
) -> tuple[int, int]:
    """(discards, errors) exactly as sinter's stim-then-decode sampler counts them."""
    if not isinstance(predictions, np.ndarray) or predictions.dtype != np.uint8:
        raise ValueError("the decoder must return a uint8 numpy array of bit-packed predictions")
    if predictions.shape[0] != actual_obs.shape[0]:
        raise ValueError("the decoder returned a prediction count unlike the shot count")
    discards = 0
    if predictions.shape[1] == actual_obs.shape[1] + 1:  # an extra byte flags a discard
        keep = predictions[:, -1] == 0
        discards += int(np.count_nonzero(~keep))
        actual_obs, predictions = actual_obs[keep], predictions[keep, :-1]
    if post_obs_mask is not None:
        hit = np.any((actual_obs ^ predictions) & post_obs_mask, axis=1)
        discards += int(np.count_nonzero(hit))
        actual_obs, predictions = actual_obs[~hit], predictions[~hit]
    errors = int(np.count_nonzero(np.any(actual_obs != predictions, axis=1)))
    return discards, errors


def sinter_samplers() -> dict[str, sinter.Sampler]:
    """``--custom_decoders_module_function qec_kiln.tsim:sinter_samplers`` for sinter collect.

    ``tsim``: tsim sampling, pymatching decoding with the circuit's stim detector error model.
    Needs no tsim/JAX to be called; they are imported in sinter's workers.
    """
    return {"tsim": TsimSampler(decoder="pymatching")}

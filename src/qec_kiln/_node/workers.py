"""Workers on one machine: disjoint CPU sets (and GPUs) for concurrent ``sinter collect`` runs.

sinter pins its worker process i to CPU i unless ``--allowed_cpu_affinity_ids`` says otherwise,
and it ignores the process's own affinity mask (see docs/design.md). So two sinters at once on one
machine share CPU 0 while the others idle. Every worker of a machine (a local batch slot, one of
G GPU workers) therefore gets its own slice of ``os.sched_getaffinity(0)`` (which honours Slurm's
and a container's cpuset), and ``run-batch`` hands its slice to sinter.

Example:
    >>> [w.cpus for w in worker_environments(range(8), [], 3)]
    [(0, 1, 2), (3, 4, 5), (6, 7)]
    >>> [w.env for w in worker_environments(range(4), ["0", "1"], 2)]
    [{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence

from qec_kiln._errors import KilnError

__all__ = ["Worker", "allowed_cpus", "format_cpus", "gpu_ids", "parse_cpus", "slot_processes", "slot_workers",
           "split_cores", "worker_environments"]


@dataclasses.dataclass(frozen=True)
class Worker:
    """One worker of a machine: its CPUs (for sinter's ``--allowed_cpu_affinity_ids``), its GPUs
    and the environment variables it runs with."""

    index: int
    cpus: tuple[int, ...]
    gpus: tuple[str, ...] = ()

    @property
    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)} if self.gpus else {}


def _chunks(items: Sequence, parts: int) -> list[tuple]:
    """``items`` cut into ``parts`` contiguous pieces whose sizes differ by at most one."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        out.append(tuple(items[start:end]))
        start = end
    return out


def worker_environments(cpus: Iterable[int], gpus: Sequence[str], workers: int | None = None
                        ) -> list[Worker]:
    """Split a machine's ``cpus`` and ``gpus`` among ``workers`` workers (default: one per GPU,
    or one with everything): disjoint, contiguous CPU sets as even as possible, and the GPUs in
    contiguous groups (each worker's ``CUDA_VISIBLE_DEVICES``).

    More workers than CPUs is allowed only when asked for: then worker i shares CPU i mod n.

    Example:
        >>> [(w.cpus, w.gpus) for w in worker_environments([0, 1, 2, 3], ["0", "1", "2", "3"])]
        [((0,), ('0',)), ((1,), ('1',)), ((2,), ('2',)), ((3,), ('3',))]
        >>> [w.cpus for w in worker_environments([4, 5], [], 3)]
        [(4,), (5,), (4,)]
        >>> worker_environments([0, 1], ["0"], 2)
        Traceback (most recent call last):
        qec_kiln._errors.KilnError: --workers 2 is more than the 1 GPU(s) of this machine; ...
    """
    cpu_list = sorted(set(int(c) for c in cpus))
    if not cpu_list:
        raise KilnError("no CPU is allowed to this process (os.sched_getaffinity is empty)")
    gpu_list = [str(g) for g in gpus]
    k = workers if workers is not None else max(1, len(gpu_list))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise KilnError(f"--workers must be a whole number >= 1 (got {k!r})")
    if gpu_list and k > len(gpu_list):
        raise KilnError(f"--workers {k} is more than the {len(gpu_list)} GPU(s) of this machine; "
                        f"give at most --workers {len(gpu_list)} (each worker needs its own GPU)")
    if k <= len(cpu_list):
        cpu_sets = _chunks(cpu_list, k)
    else:
        cpu_sets = [(cpu_list[i % len(cpu_list)],) for i in range(k)]
    gpu_sets = _chunks(gpu_list, k) if gpu_list else [()] * k
    return [Worker(i, cpu_sets[i], gpu_sets[i]) for i in range(k)]


def machine_cpus() -> list[int]:
    """The CPUs this process may run on (Slurm's and a container's cpuset included)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def parse_cpus(text: str, flag: str = "--cpus-allowed") -> list[int]:
    """A CPU list such as ``0-3,6`` (the ``taskset``/cpuset syntax).

    Example:
        >>> parse_cpus("0-3,6"), parse_cpus("5")
        ([0, 1, 2, 3, 6], [5])
        >>> parse_cpus("3-1")
        Traceback (most recent call last):
        qec_kiln._errors.KilnError: --cpus-allowed '3-1': not a CPU list like 0-3,6
    """
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi or lo)
            if a < 0 or b < a:
                raise ValueError
            out.update(range(a, b + 1))
    except ValueError:
        raise KilnError(f"{flag} {text!r}: not a CPU list like 0-3,6") from None
    return sorted(out)


def format_cpus(cpus: Iterable[int]) -> str:
    """The short form of a CPU list.

    Example:
        >>> format_cpus([0, 1, 2, 3, 6])
        '0-3,6'
    """
    ids = sorted(set(cpus))
    parts, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def allowed_cpus(spec: str | None) -> list[int]:
    """The CPUs a batch's sinter may use: ``spec`` (run-batch ``--cpus-allowed``), else this
    process's affinity mask. A spec outside the mask is refused (it would silently share)."""
    mine = machine_cpus()
    if not spec:
        return mine
    wanted = parse_cpus(spec)
    outside = sorted(set(wanted) - set(mine))
    if outside:
        raise KilnError(f"--cpus-allowed {spec}: CPU(s) {format_cpus(outside)} are not allowed to "
                        f"this process (allowed: {format_cpus(mine)})")
    return wanted


def gpu_ids(gpus: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The device ids of ``--gpus`` on this machine: ``H100:2`` or ``2`` is two GPUs, taken from
    ``CUDA_VISIBLE_DEVICES`` when it is set, else ``0, 1``; no ``--gpus``: none.

    Example:
        >>> gpu_ids("H100:2", {}), gpu_ids("2", {"CUDA_VISIBLE_DEVICES": "4,5,6"}), gpu_ids(None)
        (['0', '1'], ['4', '5'], [])
    """
    if not gpus:
        return []
    count_text = gpus.rpartition(":")[2] if ":" in gpus else gpus
    try:
        count = int(count_text)
    except ValueError:
        count = 1  # a bare accelerator name, e.g. "H100"
    if count < 1:
        raise KilnError(f"--gpus {gpus!r}: the count must be >= 1")
    env = os.environ if environ is None else environ
    visible = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if visible:
        if count > len(visible):
            raise KilnError(f"--gpus {gpus!r}: only {len(visible)} GPU(s) in CUDA_VISIBLE_DEVICES")
        return visible[:count]
    return [str(i) for i in range(count)]


def split_cores(num_batches: int, workers: int | None, processes: int | None,
                gpus: str | None = None) -> tuple[int, int]:
    """(batches at once, sinter processes each): K slots (default one, or one per GPU), each with
    its share of this process's CPUs.

    >>> split_cores(10, None, None)[0]
    1
    >>> split_cores(3, 2, 4)
    (2, 4)
    """
    workers_ = slot_workers(num_batches, workers, gpus)
    return len(workers_), processes or len(workers_[0].cpus)


def slot_workers(num_batches: int, workers: int | None, gpus: str | None = None) -> list[Worker]:
    """The local slots: K workers (at most one per batch), each with disjoint CPUs and GPUs."""
    gpu_list = gpu_ids(gpus)
    k = workers or max(1, len(gpu_list))
    k = max(1, min(k, num_batches))
    return worker_environments(machine_cpus(), gpu_list, k)


def slot_processes(workers: int | None, processes: int | None, gpus: str | None = None
                   ) -> tuple[int, tuple[int, ...]]:
    """K local slots (default one, or one per GPU) and the sinter processes of each batch when
    1, 2, ..., K slots are busy (fewer slots share the cores among fewer batches).

    >>> slot_processes(2, 4)
    (2, (4, 4))
    """
    k = workers or max(1, len(gpu_ids(gpus)))
    return k, tuple(split_cores(s, workers, processes, gpus)[1] for s in range(1, k + 1))

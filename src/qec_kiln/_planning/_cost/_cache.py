"""What a pilot run measured (:class:`Calibration`), and where it is kept between plans
(:class:`CalibrationCache`, keyed by sinter strong_id).

Example:
    >>> Calibration(seconds_per_shot=1e-6, shots=1000, errors=3).to_json()["shots"]
    1000
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
from collections.abc import Mapping
from typing import Any

from qec_kiln._atomic import atomic_write

__all__ = ["PRIOR_LOG_SIGMA", "Calibration", "CalibrationCache", "default_cache_path"]

#: Spread (natural-log standard deviation) assumed for the logical-error-rate prior: a factor ~5.
PRIOR_LOG_SIGMA = math.log(5.0)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What a pilot run of one task measured.

    Example:
        >>> cal = Calibration(seconds_per_shot=2e-6, shots=10_000, errors=0)
        >>> 0 < cal.p_logical_estimate(prior=1e-3) < 1e-3   # zero errors: below the prior, not 0
        True
        >>> round(Calibration(1e-6, 100_000, 1000).p_logical_estimate(prior=1e-4), 4)
        0.01
    """

    seconds_per_shot: float
    shots: int
    errors: int

    def p_logical_estimate(self, prior: float) -> float:
        """Posterior median of the logical error rate, given the pilot counts and a prior.

        The prior is log-normal around ``prior`` (sigma = :data:`PRIOR_LOG_SIGMA`); the pilot
        adds a binomial likelihood. Many errors: ~errors/shots. No errors in a pilot much shorter
        than 1/prior: ~prior. No errors in a long pilot: below 1/shots, never 0. With no prior
        (``prior <= 0``) it is the Jeffreys estimate ``(errors + 0.5) / (shots + 1)``.
        """
        n, e = self.shots, self.errors
        if prior <= 0 or not math.isfinite(prior):
            return (e + 0.5) / (n + 1)
        mu = math.log(min(prior, 0.5))
        lo, hi = mu - 8 * PRIOR_LOG_SIGMA, min(mu + 8 * PRIOR_LOG_SIGMA, math.log(0.999))
        if e > 0:  # make sure the grid covers the likelihood's peak
            peak = math.log(min(e / n, 0.999))
            lo, hi = min(lo, peak - 5), max(hi, min(peak + 1, math.log(0.999)))
        steps = 2000
        grid = [lo + (hi - lo) * i / steps for i in range(steps + 1)]
        log_post = []
        for x in grid:
            p = math.exp(x)
            ll = -0.5 * ((x - mu) / PRIOR_LOG_SIGMA) ** 2
            ll += e * x + (n - e) * math.log1p(-p)
            log_post.append(ll)
        top = max(log_post)
        weights = [math.exp(v - top) for v in log_post]
        half = sum(weights) / 2
        acc = 0.0
        for x, w in zip(grid, weights, strict=True):
            acc += w
            if acc >= half:
                return math.exp(x)
        return math.exp(grid[-1])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Calibration:
        """Inverse of :meth:`to_json`; unknown keys (host, time) are ignored."""
        return Calibration(
            seconds_per_shot=float(data["seconds_per_shot"]),
            shots=int(data["shots"]),
            errors=int(data["errors"]),
        )


def default_cache_path() -> pathlib.Path:
    """``$QEC_KILN_CACHE_DIR/calibration.json``, else ``~/.cache/qec-kiln/calibration.json``."""
    base = os.environ.get("QEC_KILN_CACHE_DIR")
    folder = pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "qec-kiln"
    return folder.expanduser() / "calibration.json"


class CalibrationCache:
    """Calibrations kept in a JSON file, keyed by sinter strong_id.

    Timings are of the machine that ran the pilot (its host name is stored with each entry).
    Writes re-read the file under an exclusive lock and replace it atomically, so concurrent
    planners do not corrupt it.

    Example:
        >>> import tempfile
        >>> cache = CalibrationCache(pathlib.Path(tempfile.mkdtemp()) / "c.json")
        >>> cache.put("abc", Calibration(1e-6, 1000, 3))
        >>> CalibrationCache(cache.path).get("abc")
        Calibration(seconds_per_shot=1e-06, shots=1000, errors=3)
        >>> cache.get("missing") is None
        True
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = pathlib.Path(path) if path is not None else default_cache_path()
        self._entries: dict[str, Calibration] | None = None

    def _read_file(self) -> dict[str, Calibration]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable cache: start again rather than fail a plan
        entries = data.get("entries", {}) if isinstance(data, dict) else {}
        out: dict[str, Calibration] = {}
        for key, value in entries.items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                out[key] = Calibration.from_json(value)
        return out

    def _load(self) -> dict[str, Calibration]:
        if self._entries is None:
            self._entries = self._read_file()
        return self._entries

    def get(self, strong_id: str) -> Calibration | None:
        """The stored calibration of ``strong_id``, or None."""
        return self._load().get(strong_id)

    def __contains__(self, strong_id: object) -> bool:
        return strong_id in self._load()

    def __len__(self) -> int:
        return len(self._load())

    def put(self, strong_id: str, calibration: Calibration) -> None:
        """Store one calibration (written to disk at once)."""
        self.put_many({strong_id: calibration})

    def put_many(self, calibrations: Mapping[str, Calibration]) -> None:
        """Store several calibrations with one write."""
        if not calibrations:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as lock:
            with contextlib.suppress(ImportError, OSError):
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                raw: dict[str, Any] = {}
                with contextlib.suppress(FileNotFoundError, ValueError, OSError):
                    loaded = json.loads(self.path.read_text())
                    if isinstance(loaded, dict):
                        raw = dict(loaded.get("entries", {}))
                stamp = {
                    "host": platform.node(),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                for key, cal in calibrations.items():
                    raw[key] = {**cal.to_json(), **stamp}
                atomic_write(self.path, json.dumps({"version": 1, "entries": raw}, indent=1,
                                                   sort_keys=True))
            finally:
                with contextlib.suppress(ImportError, OSError):
                    import fcntl

                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        entries = self._load()
        entries.update(calibrations)

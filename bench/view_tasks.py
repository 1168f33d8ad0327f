"""The watch page with 1,000 tasks: the size of its poll (``api/state``) with none, half and all
of the tasks done, beside the task table's parts it fetches only when they change, and the
Watcher's refresh time (a local bucket; sinter.fit_binomial cached per (shots, errors)).

    .venv/bin/python bench/view_tasks.py        # prints one line per case, ratios at the end
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import stim  # noqa: E402
from test_merge import make_sweep, row, write_fragment  # noqa: E402

from qec_kiln._view.server import Watcher  # noqa: E402

N = 1000


def main() -> None:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    folder = tmp / "c"
    folder.mkdir()
    c = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=1,
                               after_clifford_depolarization=0.01)
    for i in range(N):
        (folder / f"d=3,i={i}.stim").write_text(str(c))
    bucket = tmp / "bucket"
    m = make_sweep(folder, bucket, "big", jobs=4, max_shots=1000)
    w = Watcher(str(bucket))
    sizes = {}
    for done in (0, N // 2, N):
        k = 0
        for b in m.batches:
            lines = []
            for s in b.shards:
                lines.append(row(m, s.strong_id, 1000 if k < done else 500, k % 37))
                k += 1
            write_fragment(bucket, m, b.id, lines)
        t0 = time.perf_counter()
        w.refresh()
        took = time.perf_counter() - t0
        state = json.dumps(w.state()).encode()
        d, left = (len(w.tasks("big", p) or b"") for p in ("done", "left"))
        sizes[done] = len(state)
        print(f"{done:5d} of {N} done: api/state {len(state):7,} B (polled every second); "
              f"api/tasks done {d:8,} B, left {left:8,} B (fetched when changed); "
              f"refresh {took:.2f} s")
    print(f"api/state all done / none done: {sizes[N] / sizes[0]:.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time from a fragment landing in a local bucket to ``qec-kiln watch``'s page showing it.

Runs a small real sweep to the end (``qec-kiln launch``, 6 circuits, 3 batches), keeps its
fragments aside, and starts ``qec-kiln watch`` (default ``--interval 2``) on the bucket without
them. Then, ``--landings`` times, puts one fragment back the way run-batch uploads it (written
whole, then renamed into place) and times, in headless chromium, until the page shows that batch
as DONE and its plot has changed. Prints each landing and the last line
``view: fragment-to-page median=<s> max=<s> (interval <s>)``.

Usage::

    python bench/view_latency.py                  # the watch default, --interval 2
    python bench/view_latency.py --interval 0.5
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from _chromium import chromium  # noqa: E402
from cores import free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--landings", type=int, default=3)
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kiln-view-bench-"))
    kiln = [sys.executable, "-m", "qec_kiln"]
    subprocess.run([sys.executable, str(REPO / "examples" / "generate_surface_codes.py"), "--out",
                    str(tmp / "c"), "-d", "3", "5", "-p", "0.003", "0.005", "0.01"], check=True,
                   capture_output=True)
    bucket = tmp / "bucket"
    subprocess.run([*kiln, "launch", str(tmp / "c"), "--bucket", str(bucket), "--name", "lat",
                    "--jobs", "3", "--max-shots", "20_000", "--max-errors", "200"], check=True,
                   capture_output=True)
    frags = bucket / "lat" / "fragments"
    aside = tmp / "aside"
    shutil.move(frags, aside)
    frags.mkdir()
    port = free_port()
    watch = subprocess.Popen([*kiln, "watch", "--bucket", str(bucket), "--port", str(port),
                              "--interval", str(args.interval)], stdout=subprocess.PIPE, text=True)
    watch.stdout.readline()
    took = []
    try:
        with chromium() as page:
            page.get(f"http://127.0.0.1:{port}/")
            time.sleep(3)
            for frag in sorted(aside.iterdir())[:args.landings]:
                batch = frag.stem
                src = page.execute_script("const i = document.querySelector('.plot img');"
                                          "return i ? i.src : null")
                part = frags / f".{batch}.tmp"
                shutil.copy(frag, part)
                t0 = time.monotonic()
                os.replace(part, frags / frag.name)  # the fragment lands
                while True:
                    shown = page.execute_script(
                        "const tr = document.querySelector(`tr[data-batch='${arguments[0]}']`);"
                        "const i = document.querySelector('.plot img');"
                        "return tr && tr.cells[1].textContent === 'DONE' && i && i.complete"
                        " && i.naturalWidth > 0 && i.src !== arguments[1]", batch, src)
                    if shown:
                        break
                    if time.monotonic() - t0 > 60:
                        raise SystemExit(f"batch {batch} never showed")
                    time.sleep(0.05)
                took.append(time.monotonic() - t0)
                print(f"landing {batch}: shown after {took[-1]:.2f} s", flush=True)
                time.sleep(args.interval)
    finally:
        watch.terminate()
        watch.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"view: fragment-to-page median={statistics.median(took):.2f} max={max(took):.2f} "
          f"(interval {args.interval:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

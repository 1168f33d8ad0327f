#!/usr/bin/env python3
"""The README's picture of ``qec-kiln watch``: docs/watch.png, taken while a sweep runs.

Generates the demo's 30 circuits, launches them locally with small targets (``--max-shots
200_000 --max-errors 200``, 2 batches) into a temporary bucket, serves the page with
``qec-kiln watch`` and, after ``--after`` seconds of sampling, saves a screenshot of it from
headless chromium. Run it by hand when the page changes; tests never write docs/.

Usage::

    python bench/screenshot.py                      # writes docs/watch.png
    python bench/screenshot.py --after 20 --out /tmp/watch.png
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from _chromium import chromium  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "watch.png"))
    ap.add_argument("--after", type=float, default=75.0, help="seconds of sampling first")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kiln-shot-"))
    kiln = [sys.executable, "-m", "qec_kiln"]
    subprocess.run([sys.executable, str(REPO / "examples" / "generate_surface_codes.py"), "--out",
                    str(tmp / "circuits")], check=True, capture_output=True)
    bucket = tmp / "bucket"
    launch = subprocess.Popen([*kiln, "launch", str(tmp / "circuits"), "--bucket", str(bucket),
                               "--name", "demo", "--jobs", "2", "--max-shots", "200_000",
                               "--max-errors", "200", "--sync-seconds", "5"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    watch = subprocess.Popen([*kiln, "watch", "--bucket", str(bucket), "--port", str(port)],
                             stdout=subprocess.DEVNULL)
    try:
        time.sleep(args.after)
        with chromium(1280, 1500) as page:
            page.get(f"http://127.0.0.1:{port}/")
            time.sleep(4)
            page.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        watch.terminate()
        launch.terminate()
        launch.wait(60)
        watch.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

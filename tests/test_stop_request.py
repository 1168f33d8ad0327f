"""A cancel's stop request through the bucket (``_node/stop.py``): the cancel writes
``<sweep>/stop/<job id>``, run-batch of that job sees it, stops, acknowledges, holds; a run of
another job id never stops on it."""

from __future__ import annotations

import threading
import time

from qec_kiln._backends.skypilot.environment import RUN_ID_ENV
from qec_kiln._node.stop import StopRequest, request_stop, stop_key
from qec_kiln._storage import open_bucket


def test_the_named_run_stops_and_says_so_and_another_run_does_not(tmp_path):
    bucket = open_bucket(str(tmp_path / "bucket"))
    node = StopRequest(bucket, "sw", env={RUN_ID_ENV: "5"})
    other = StopRequest(bucket, "sw", env={RUN_ID_ENV: "6"})
    outside = StopRequest(bucket, "sw", env={})  # not a managed job: never asks the bucket
    assert not node.asked() and outside.key is None
    lines: list[str] = []

    def run_batch() -> None:  # what the sync loop and the final upload do
        while not node.asked():
            time.sleep(0.05)
        assert node.acknowledge(1234, lines.append)

    thread = threading.Thread(target=run_batch)
    thread.start()
    started = time.monotonic()
    assert request_stop(bucket, "sw", ["5"], timeout=20, poll=0.05) == ["5"]
    thread.join()
    assert time.monotonic() - started < 10
    assert bucket.read_bytes(stop_key("sw", "5") + ".stopped") == b"1234\n"
    assert not other.asked() and not outside.asked()
    assert "stopped as a cancel asked (1234 bytes uploaded)" in lines[0]
    # A run that never looks (still setting up) is left to the engine after the timeout.
    assert request_stop(bucket, "sw", ["7"], timeout=0.2, poll=0.05) == []


def test_hold_ends_at_a_signal_or_after_its_time():
    started = time.monotonic()
    StopRequest.hold([15], seconds=30)
    StopRequest.hold([], seconds=0.3)
    assert time.monotonic() - started < 5

"""Conditional writes (create-if-absent, compare-and-swap) and batch leases, against a real local
directory, the moto S3 server and fake-gcs-server (which, unlike gcp-storage-emulator, enforces
GCS preconditions)."""

from __future__ import annotations

import threading

import pytest

from qec_kiln._errors import ObjectNotFound, PreconditionFailed
from qec_kiln._storage import open_bucket


@pytest.fixture
def gcs_bucket_fixture() -> str:
    """``bucket_url``'s GCS case on fake-gcs-server, which enforces preconditions."""
    return "fake_gcs_env"


def test_create_if_absent_and_compare_and_swap(bucket_url: str) -> None:
    bucket = open_bucket(bucket_url)
    v1 = bucket.write_if("s/leases/b000.json", b"first", None)
    with pytest.raises(PreconditionFailed, match="already exists"):
        bucket.write_if("s/leases/b000.json", b"second", None)  # second create fails
    assert bucket.read_versioned("s/leases/b000.json") == (b"first", v1)
    v2 = bucket.write_if("s/leases/b000.json", b"second", v1)  # right version succeeds
    assert v2 != v1
    with pytest.raises(PreconditionFailed, match="b000.json"):
        bucket.write_if("s/leases/b000.json", b"third", v1)  # stale version fails
    assert bucket.read_versioned("s/leases/b000.json") == (b"second", v2)
    bucket.delete("s/leases/b000.json")
    with pytest.raises(PreconditionFailed):
        bucket.write_if("s/leases/b000.json", b"fourth", v2)  # gone: no blind re-create
    with pytest.raises(ObjectNotFound):
        bucket.read_versioned("s/leases/b000.json")


def test_a_plain_write_makes_a_cas_fail(bucket_url: str) -> None:
    bucket = open_bucket(bucket_url)
    v1 = bucket.write_if("k.csv", b"a\n", None)
    bucket.write_bytes("k.csv", b"b\n")
    with pytest.raises(PreconditionFailed, match="replaced"):
        bucket.write_if("k.csv", b"a\nc\n", v1)
    assert bucket.read_bytes("k.csv") == b"b\n"


def test_racing_creates_have_one_winner(bucket_url: str) -> None:
    bucket = open_bucket(bucket_url)
    winners: list[int] = []
    losers: list[int] = []
    start = threading.Barrier(6)

    def create(i: int) -> None:
        start.wait()
        try:
            bucket.write_if("race.json", f"{i}".encode(), None)
            winners.append(i)
        except PreconditionFailed:
            losers.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 5, (winners, losers)
    assert bucket.read_bytes("race.json") == str(winners[0]).encode()

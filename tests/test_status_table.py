"""``qec-kiln status`` of a sweep with many batches: the table shows a capped number of rows,
the batches that need a look first, and one line counting the rest; the totals and ``--json``
count every batch. Fragments are written with sinter's own CSV functions (test_merge's)."""

from __future__ import annotations

import json
import re

import pytest
from kiln_helpers import row, run_kiln, write_fragment

from qec_kiln._backends import JobState
from qec_kiln._command._main_status import print_status
from qec_kiln._prepare import Fleet, prepare_sweep
from qec_kiln._report.status import sweep_progress
from qec_kiln._storage import open_bucket
from qec_kiln._sweep.batches import Batch, Plan, Shard, batch_id
from qec_kiln._sweep.manifest import Manifest, fragment_key
from qec_kiln._sweep.store import upload_sweep

N = 300
BAD, STARTED, NOT_STARTED = [7], list(range(20, 30)), list(range(100, 109))


def many_batches(circuits, bucket_url, n: int = N) -> Manifest:
    """A sweep of ``n`` batches, each with a 1,000-shot shard of every task (as a big sweep's
    plan splits its tasks), laid out by the package's own code; fragments: batch 7 garbage,
    20-29 half done, 100-108 none yet, every other one finished."""
    bucket = open_bucket(str(bucket_url))
    fleet = Fleet.build(dict(decoders=["pymatching"], max_shots=1000 * n, max_errors=10**9,
                             name="many", jobs=1))
    prepared = prepare_sweep(str(circuits), fleet, bucket, lambda s: None)
    m = prepared.manifest
    tasks = [s for b in m.batches for s in b.shards]
    m.plan = Plan([Batch(batch_id(i), [Shard(t.circuit, t.decoder, t.strong_id, 1000, 10**9, 1.0,
                                             1000.0, index=i, count=n) for t in tasks])
                   for i in range(n)], m.max_shots, 10**9, "test")
    upload_sweep(bucket, m, prepared.circuits, lambda s: None)
    for i, b in enumerate(m.batches):
        if i in NOT_STARTED:
            continue
        if i in BAD:
            bucket.write_bytes(fragment_key(m.sweep, b.id), b"garbage\n")
            continue
        shots = 500 if i in STARTED else 1000
        write_fragment(bucket_url, m, b.id, [row(m, s.strong_id, shots, 1) for s in b.shards])
    return m


def table_rows(text: str) -> list[tuple[str, str]]:
    """(batch, state) of each row of a status table."""
    return re.findall(r"^│ (b\d+)\s+│ ([A-Z ]+?)\s+│", text, re.M)


@pytest.fixture
def many(tmp_path, small_circuits):
    bucket = tmp_path / "bucket"
    return bucket, many_batches(small_circuits, bucket)


def test_status_shows_the_unfinished_first_and_counts_the_rest(tmp_path, many):
    bucket, m = many
    env = {"QEC_KILN_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    r = run_kiln("status", "--bucket", str(bucket), "--sweep", "many", env=env, check=True)
    rows = table_rows(r.stdout)
    urgent = [(batch_id(BAD[0]), "BAD FRAGMENT")] + [(batch_id(i), "STARTED") for i in STARTED] \
        + [(batch_id(i), "NOT STARTED") for i in NOT_STARTED]
    done = [batch_id(i) for i in range(N) if i not in BAD + STARTED + NOT_STARTED]
    assert rows == urgent + [(b, "DONE") for b in done[:40 - len(urgent)]], r.stdout
    assert f"... and {N - 40:,} finished batches: --all shows every row" in r.stdout, r.stdout
    # The totals count every batch, shown or not.
    shots = 4 * (1000 * len(done) + 500 * len(STARTED))
    assert f"total: {shots:,} shots" in r.stdout and f"{len(done)}/{N} batches done" in r.stdout

    r = run_kiln("status", "--bucket", str(bucket), "--sweep", "many", "--rows", "5", env=env,
                 check=True)
    assert table_rows(r.stdout) == urgent[:5]
    assert (f"... and {N - 5:,} more batches (6 STARTED, 9 NOT STARTED, {len(done)} DONE): "
            "--all shows every row") in r.stdout, r.stdout
    r = run_kiln("status", "--bucket", str(bucket), "--sweep", "many", "--all", env=env,
                 check=True)
    assert len(table_rows(r.stdout)) == N and "... and" not in r.stdout
    r = run_kiln("status", "--bucket", str(bucket), "--sweep", "many", "--json", env=env,
                 check=True)
    batches = json.loads(r.stdout)[0]["batches"]
    assert [b["id"] for b in batches] == [b.id for b in m.batches]  # --json: all, in plan order
    r = run_kiln("status", "--bucket", str(bucket), "--rows", "0", env=env)
    assert r.returncode == 2 and "--rows" in r.stderr


def test_failed_then_running_batches_lead_the_table_with_their_reasons(many, capsys):
    bucket, m = many
    jobs = {"b020": JobState("b020", "FAILED", "j20", detail="preempted twice"),
            "b009": JobState("b009", "RUNNING", "j9"), "b200": JobState("b200", "PENDING", "j200"),
            "b003": JobState("b003", "SUCCEEDED", "j3")}
    report = sweep_progress(open_bucket(str(bucket)), m, jobs)
    print_status(report, rows=15)
    text = capsys.readouterr().out
    rows = table_rows(text)
    # Failed or damaged first, then running or waiting (a finished batch's job too), then the
    # other unfinished ones, each group in plan order.
    assert rows[:5] == [("b007", "BAD FRAGMENT"), ("b020", "FAILED"), ("b009", "RUNNING"),
                        ("b200", "PENDING"), ("b021", "STARTED")], text
    assert len(rows) == 15 and "... and 285 more batches" in text
    assert "b020 FAILED (job j20): preempted twice" in text
    print_status(report)  # every row
    assert len(table_rows(capsys.readouterr().out)) == N

"""Buckets against a real local directory, a moto S3 server and the GCS emulator (no mocks)."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from kiln_helpers import ON_CLOUDS

from qec_kiln._errors import KilnError, ObjectNotFound, StorageError
from qec_kiln._storage import (
    PATIENT_RETRY,
    QUICK_RETRY,
    Bucket,
    GCSBucket,
    LocalBucket,
    RetryPolicy,
    S3Bucket,
    describe_url,
    open_bucket,
    parse_url,
)

FAST = RetryPolicy(deadline_seconds=2.0, base_delay=0.2, max_delay=0.5, connect_timeout=1.0)


@pytest.fixture
def backend(bucket_env) -> tuple[str, str]:
    """(kind, url) of a fresh, empty bucket with a prefix (conftest's ``bucket_env``)."""
    return bucket_env.kind, bucket_env.url


def root_url(url: str) -> str:
    """The URL of the bucket holding ``url``'s prefix (its parent directory, for a local path)."""
    if url.startswith(("s3://", "gs://")):
        scheme, rest = url.split("://")
        return f"{scheme}://{rest.split('/')[0]}"
    return str(Path(url).parent)


# --------------------------------------------------------------------------------------------
# Round trips on every backend


def test_write_read_overwrite_delete(backend: tuple[str, str]) -> None:
    kind, url = backend
    bucket = open_bucket(url)
    assert isinstance(bucket, {"local": LocalBucket, "s3": S3Bucket, "gcs": GCSBucket}[kind])
    bucket.check_access()
    key = "sweep1/fragments/b000.csv"
    assert not bucket.exists(key)
    bucket.write_bytes(key, b"shots,errors\n100,3\n")
    assert bucket.exists(key)
    assert bucket.read_bytes(key) == b"shots,errors\n100,3\n"
    bucket.write_bytes(key, b"shots,errors\n200,5\n")  # overwrite whole
    assert bucket.read_bytes(key) == b"shots,errors\n200,5\n"
    every_byte = bytes(range(256)) * 50
    bucket.write_bytes("bin/all.bytes", bytearray(every_byte))
    assert bucket.read_bytes("bin/all.bytes") == every_byte
    bucket.write_bytes("empty.csv", b"")
    assert bucket.read_bytes("empty.csv") == b""
    bucket.delete(key)
    assert not bucket.exists(key)
    bucket.delete(key)  # missing: no error
    bucket.delete("never/written.csv")
    with pytest.raises(ObjectNotFound) as info:
        bucket.read_bytes(key)
    assert bucket.url_for(key) in str(info.value)


def test_list_keys(backend: tuple[str, str]) -> None:
    _, url = backend
    bucket = open_bucket(url)
    assert bucket.list_keys() == []
    keys = [
        "sweep1/fragments/b001.csv",
        "sweep1/fragments/b000.csv",
        "sweep1/plan.json",
        "sweep10/plan.json",
        "top.txt",
    ]
    for key in keys:
        bucket.write_bytes(key, key.encode())
    assert bucket.list_keys() == sorted(keys)
    assert bucket.list_keys("sweep1/") == sorted(keys[:3])
    assert bucket.list_keys("sweep1") == sorted(keys[:4])
    assert bucket.list_keys("sweep1/fragments/b00") == [
        "sweep1/fragments/b000.csv",
        "sweep1/fragments/b001.csv",
    ]
    assert bucket.list_keys("sweep1/fragments/b000.csv") == ["sweep1/fragments/b000.csv"]
    assert bucket.list_keys("nothing/") == []
    assert bucket.list_keys("sweep2") == []


def test_prefix_isolation(backend: tuple[str, str]) -> None:
    """Keys live under the URL's prefix; a sibling prefix sharing its first letters is separate."""
    _, url = backend
    bucket = open_bucket(url)
    sibling = open_bucket(url + "2")  # e.g. s3://b/kiln2 next to s3://b/kiln
    whole = open_bucket(root_url(url))
    bucket.write_bytes("a/x.csv", b"1")
    sibling.write_bytes("a/y.csv", b"2")
    assert bucket.list_keys() == ["a/x.csv"]
    assert sibling.list_keys() == ["a/y.csv"]
    name = url.rstrip("/").rsplit("/", 1)[1]
    assert whole.list_keys() == [f"{name}/a/x.csv", f"{name}2/a/y.csv"]
    assert whole.read_bytes(f"{name}/a/x.csv") == b"1"
    assert not bucket.exists("a/y.csv")


@pytest.mark.parametrize(
    "key", ["../x.csv", "a/../../x.csv", "a/..", "/etc/passwd", "", "a//b", "./a", "a/./b", "a/"]
)
def test_key_escape_rejected(backend: tuple[str, str], key: str) -> None:
    _, url = backend
    bucket = open_bucket(url)
    for call in (
        lambda: bucket.write_bytes(key, b"x"),
        lambda: bucket.read_bytes(key),
        lambda: bucket.exists(key),
        lambda: bucket.delete(key),
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert not isinstance(info.value, ObjectNotFound)
        assert bucket.url in str(info.value)
    if key not in ("", "a/"):
        with pytest.raises(StorageError):
            bucket.list_keys(key)


def test_threads_share_a_bucket(backend: tuple[str, str]) -> None:
    _, url = backend
    bucket = open_bucket(url)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(3):
                bucket.write_bytes(f"t/{i}-{j}.csv", f"{i},{j}".encode())
                assert bucket.read_bytes(f"t/{i}-{j}.csv") == f"{i},{j}".encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(bucket.list_keys("t/")) == 18


# --------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/bucket",
        "https://storage.googleapis.com/b",
        "s3://",
        "s3:///prefix",
        "s3:bucket",
        "s3://Bad_Bucket!",
        "s3://ab",
        "s3://192.168.1.1",
        "gs://",
        "gs://UPPER",
        "gcs://bucket",
        "az://container/x",
        "file://",
        "s3://bucket/a/../b",
        "",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(StorageError) as info:
        open_bucket(url)
    message = str(info.value)
    assert repr(url) in message
    assert "s3://BUCKET[/PREFIX]" in message and "gs://BUCKET[/PREFIX]" in message
    assert "file://PATH" in message and "\n" not in message
    assert isinstance(info.value, KilnError)


def test_url_normalization(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_url("s3://my-bucket/runs/2024/").url == "s3://my-bucket/runs/2024"
    assert parse_url("s3://my-bucket/").url == "s3://my-bucket"
    assert parse_url("S3://my-bucket").url == "s3://my-bucket"
    assert parse_url("gs://my_bucket.x/p").bucket == "my_bucket.x"
    assert parse_url("gs://b-1/a/b").prefix == "a/b"
    assert parse_url(f"file://{tmp_path}/x").url == f"{tmp_path}/x"
    monkeypatch.chdir(tmp_path)
    assert parse_url("data/bucket").url == f"{tmp_path}/data/bucket"
    assert parse_url(tmp_path / "p").url == f"{tmp_path}/p"
    assert parse_url("./odd:name").url == f"{tmp_path}/odd:name"
    assert repr(open_bucket("s3://my-bucket/sweeps")) == "S3Bucket('s3://my-bucket/sweeps')"
    assert isinstance(open_bucket("gs://my-bucket"), GCSBucket)


def test_describe_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETISH")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-me")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    text = describe_url("s3://b-1/p")
    assert "'b-1'" in text and "'p/'" in text and "http://127.0.0.1:9 (AWS_ENDPOINT_URL)" in text
    assert "do-not-print-me" not in text and "AKIDSECRETISH" not in text
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:8")
    assert "emulator http://127.0.0.1:8" in describe_url("gs://b-1")
    assert describe_url("/tmp/x") == "local directory /tmp/x"


# --------------------------------------------------------------------------------------------
# Local specifics


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    bucket = open_bucket(f"file://{tmp_path}/new/dir")
    bucket.check_access()  # does not exist yet, but can be created
    assert not (tmp_path / "new").exists()
    bucket.write_bytes("a/b.csv", b"1")
    assert (tmp_path / "new/dir/a/b.csv").read_bytes() == b"1"
    (tmp_path / "new/dir/a/.kiln-tmp-leftover").write_bytes(b"partial")  # a crashed writer
    assert bucket.list_keys() == ["a/b.csv"]
    assert sorted(p.name for p in (tmp_path / "new/dir/a").iterdir()) == [
        ".kiln-tmp-leftover",
        "b.csv",
    ]


def test_local_check_access_on_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        open_bucket(tmp_path / "file").check_access()
    with pytest.raises(StorageError, match="cannot write"):
        open_bucket(tmp_path / "file").write_bytes("a.csv", b"x")


# --------------------------------------------------------------------------------------------
# Retry policy


def test_retry_policy() -> None:
    assert QUICK_RETRY.deadline_seconds <= 20 and PATIENT_RETRY.deadline_seconds >= 300
    policy = RetryPolicy(base_delay=1, max_delay=8)
    assert [policy.backoff(n, jitter=False) for n in (1, 2, 3, 4, 5, 6, 1000)] == [
        1,
        2,
        4,
        8,
        8,
        8,
        8,
    ]
    for n in range(1, 10):
        nominal = policy.backoff(n, jitter=False)
        assert nominal / 2 <= policy.backoff(n) <= nominal
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(read_timeout=0)


# --------------------------------------------------------------------------------------------
# S3 credentials and endpoints


def _no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "aws-credentials").write_text("")
    (tmp_path / "aws-config").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_s3_missing_credentials(s3_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_aws_config(monkeypatch, tmp_path)
    bucket = open_bucket(s3_env.url, retry=PATIENT_RETRY)  # retrying would take 300 s
    start = time.monotonic()
    for call in (bucket.check_access, lambda: bucket.write_bytes("a.csv", b"x")):
        with pytest.raises(StorageError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"no AWS credentials found for {s3_env.url}")
        assert "AWS_PROFILE" in message and "aws configure" in message
    assert time.monotonic() - start < 60  # not retried (PATIENT_RETRY would try for 300 s)


def test_s3_profile_not_found(s3_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StorageError, match="'no-such-profile' .*not found"):
        open_bucket(s3_env.url).check_access()


@pytest.mark.slow  # the S3 server with IAM starts for it: seconds
def test_s3_wrong_credentials(s3_auth, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_aws_config(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_auth.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    url = f"s3://{s3_auth.bucket}/kiln"

    def use(key_id: str, secret: str) -> Bucket:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        return open_bucket(url, retry=PATIENT_RETRY)  # retrying would take 300 s

    good = use(s3_auth.access_key_id, s3_auth.secret_access_key)  # the server does accept these
    good.check_access()
    good.write_bytes("ok.csv", b"1")
    assert good.read_bytes("ok.csv") == b"1"

    cases = [
        (s3_auth.access_key_id, "wrong-secret-value", "SignatureDoesNotMatch"),
        ("AKIAUNKNOWNKEY000000", "wrong-secret-value", "InvalidAccessKeyId"),
    ]
    for key_id, secret, code in cases:
        bucket = use(key_id, secret)
        start = time.monotonic()
        with pytest.raises(StorageError) as info:
            bucket.check_access()
        assert time.monotonic() - start < 60  # not retried (PATIENT_RETRY would try for 300 s)
        message = str(info.value)
        assert message.startswith(f"S3 rejected the AWS credentials for {url} ({code})")
        assert "wrong-secret-value" not in message and "\n" not in message
        with pytest.raises(StorageError, match=code):
            bucket.write_bytes("x.csv", b"x")

    denied = use(s3_auth.denied_access_key_id, s3_auth.denied_secret_access_key)
    with pytest.raises(StorageError, match=r"S3 denied accessing .*AccessDenied.*s3:ListBucket"):
        denied.check_access()
    with pytest.raises(StorageError, match="S3 denied writing"):
        denied.write_bytes("x.csv", b"x")


@ON_CLOUDS
def test_missing_bucket(bucket_env) -> None:
    """On S3 and GCS alike: refused at once, naming the bucket, and so is every call after."""
    url = ("s3" if bucket_env.kind == "s3" else "gs") + "://kiln-no-such-bucket/p"
    bucket = open_bucket(url)
    with pytest.raises(StorageError, match="'kiln-no-such-bucket' does not exist") as info:
        bucket.check_access(retry=PATIENT_RETRY)  # not retried
    assert url in str(info.value)
    with pytest.raises(StorageError, match="does not exist"):
        bucket.write_bytes("a.csv", b"x")
    with pytest.raises(StorageError, match="does not exist"):
        bucket.list_keys()
    with pytest.raises(StorageError, match="does not exist"):
        bucket.delete("a.csv")


@pytest.mark.slow
def test_s3_service_specific_endpoint_wins(s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore itself reads AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint)
    open_bucket(s3_env.url).check_access(retry=FAST)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    with pytest.raises(StorageError, match="cannot reach S3"):
        open_bucket(s3_env.url).check_access(retry=FAST)


# --------------------------------------------------------------------------------------------
# GCS credentials


def test_gcs_missing_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no ADC file there
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    bucket = open_bucket("gs://kiln-bucket/p")
    with pytest.raises(StorageError) as info:
        bucket.check_access()
    assert str(info.value) == (
        "no Google Cloud credentials for gs://kiln-bucket/p: run "
        "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
    )


# --------------------------------------------------------------------------------------------
# Unreachable and hanging endpoints, outages


def _point_at(bucket_env, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    var = "AWS_ENDPOINT_URL" if bucket_env.url.startswith("s3://") else "STORAGE_EMULATOR_HOST"
    monkeypatch.setenv(var, endpoint)


@ON_CLOUDS
@pytest.mark.slow
def test_unreachable_endpoint(bucket_env, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    _point_at(bucket_env, monkeypatch, endpoint)
    bucket = open_bucket(bucket_env.url, retry=FAST)
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        bucket.check_access()
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 60, elapsed  # retried until the 2 s deadline, then gave up
    message = str(info.value)
    assert message.startswith("cannot reach ") and endpoint in message
    # "N attempts in T s"; on a loaded machine the first attempt alone may outlast the deadline
    assert bucket_env.url in message and re.search(r"\b\d+ attempts? in ", message), message
    assert "\n" not in message


@ON_CLOUDS
@pytest.mark.slow
def test_hanging_endpoint_times_out(bucket_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts connections but never answers: the read timeout ends each try."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        _point_at(bucket_env, monkeypatch, endpoint)
        policy = RetryPolicy(deadline_seconds=1.0, base_delay=0.2, read_timeout=0.5)
        start = time.monotonic()
        with pytest.raises(StorageError, match="cannot reach .*[Tt]ime"):
            open_bucket(bucket_env.url).write_bytes("a.csv", b"x", retry=policy)
        assert time.monotonic() - start < 60  # gave up (1 s deadline), did not hang


@pytest.mark.slow
def test_paused_s3_server_times_out_then_recovers(s3_env) -> None:
    bucket = open_bucket(s3_env.url)
    bucket.write_bytes("a.csv", b"1")
    policy = RetryPolicy(
        deadline_seconds=1.0, base_delay=0.2, connect_timeout=0.5, read_timeout=0.5
    )
    s3_env.server.pause()  # accepts connections (kernel backlog) but never answers
    try:
        start = time.monotonic()
        with pytest.raises(StorageError, match="cannot reach S3 .*[Tt]ime"):
            bucket.read_bytes("a.csv", retry=policy)
        assert time.monotonic() - start < 60  # gave up (1 s deadline), did not hang
    finally:
        s3_env.server.resume()
    assert bucket.read_bytes("a.csv") == b"1"


@ON_CLOUDS
def test_not_found_is_not_retried(bucket_env) -> None:
    bucket = open_bucket(bucket_env.url, retry=PATIENT_RETRY)
    start = time.monotonic()
    with pytest.raises(ObjectNotFound):
        bucket.read_bytes("missing.csv")
    assert not bucket.exists("missing.csv")
    assert time.monotonic() - start < 150  # not retried: PATIENT_RETRY would try for 300 s


@ON_CLOUDS
@pytest.mark.slow
def test_outage_recovery(bucket_env) -> None:
    """Stop the server, start a write with a deadline, restart the server ~3 s later: the write
    gets through, and what was stored before the outage is still there."""
    server = bucket_env.server
    bucket = open_bucket(bucket_env.url)
    bucket.write_bytes("before.csv", b"old")
    server.stop()
    result: dict[str, object] = {}

    def write() -> None:
        start = time.monotonic()
        try:
            bucket.write_bytes(
                "during.csv", b"new", retry=RetryPolicy(deadline_seconds=30, max_delay=1.0)
            )
            result["ok"] = time.monotonic() - start
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=write)
    try:
        thread.start()
        time.sleep(3)
        assert thread.is_alive(), result  # still retrying
    finally:
        server.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "ok" in result, result
    assert 3 <= result["ok"] < 10  # type: ignore[operator]
    assert bucket.read_bytes("during.csv") == b"new"
    assert bucket.read_bytes("before.csv") == b"old"  # the restart kept the data
    assert bucket.list_keys() == ["before.csv", "during.csv"]


"""S3Bucket: ``s3://BUCKET[/PREFIX]`` on Amazon S3 or an S3-compatible store, through boto3."""

from __future__ import annotations

import contextlib
import functools
import mimetypes
import os
import threading
from typing import Any

from qec_kiln._errors import ObjectNotFound, PreconditionFailed, StorageError
from qec_kiln._storage._bucket import Bucket, RetryPolicy, precondition_message
from qec_kiln._storage._urls import BucketURL, doing, one_line, s3_endpoint_setting

_S3_BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
@functools.cache
def _s3_retryable() -> Any:
    """botocore's standard-mode classifier (transient, throttling, modeled retryable errors);
    our policy counts the attempts."""
    from botocore.retries.standard import StandardRetryConditions

    return StandardRetryConditions(max_attempts=1_000_000)


_AWS_CREDENTIALS_HINT = (
    "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws configure`"
)


class S3Bucket(Bucket):
    """``s3://BUCKET[/PREFIX]`` through boto3.

    The endpoint, region and credentials come from the usual AWS settings (``AWS_PROFILE``,
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
    ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``~/.aws``), read when the first call
    creates the client. botocore's standard retry mode decides which errors are transient;
    a hook (:meth:`_needs_retry`) makes it retry them within the :class:`RetryPolicy`'s attempts
    and deadline, and the policy's connect/read timeouts are set on the client.
    """

    def __init__(self, parsed: BucketURL, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(parsed, retry=retry)
        self.bucket_name = parsed.bucket
        self.prefix = parsed.prefix
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[RetryPolicy, Any] = {}
        self._endpoint: str | None = None

    def _client(self, policy: RetryPolicy) -> Any:
        with self._lock:
            client = self._clients.get(policy)
            if client is None:
                import boto3.session
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                client = self._session.client(
                    "s3",
                    config=Config(
                        connect_timeout=policy.connect_timeout,
                        read_timeout=policy.read_timeout,
                        # botocore's own loop makes one attempt; the hook below, called first,
                        # asks its standard-mode classifier and retries under the policy.
                        retries={"mode": "standard", "total_max_attempts": 1},
                        max_pool_connections=32,  # merge/status read 16 fragments at once
                    ),
                )
                client.meta.events.register_first(
                    "needs-retry.s3",
                    functools.partial(self._needs_retry, policy),
                    unique_id="qec-kiln-retry-policy",
                )
                self._clients[policy] = client
                self._endpoint = client.meta.endpoint_url
            return client

    def _needs_retry(self, policy: RetryPolicy, **kwargs: Any) -> float | None:
        """botocore's ``needs-retry`` hook: seconds to wait, or None for no retry."""
        from botocore.exceptions import SSLError
        from botocore.retries.standard import RetryEventAdapter

        context = RetryEventAdapter().create_retry_context(**kwargs)
        if not _s3_retryable().is_retryable(context):
            return None  # a success, or an error that another attempt will not fix
        exc = kwargs.get("caught_exception")
        if isinstance(exc, SSLError):
            return None  # a certificate or endpoint problem (botocore would retry it)
        if exc is None:
            error = (context.parsed_response or {}).get("Error", {})
            exc = f"{error.get('Code') or 'HTTP'} {getattr(context.http_response, 'status_code', '')}"
        return self._may_retry(policy, context.attempt_number, exc)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def _full_key(self, key: str) -> str:
        key = self._check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _list_prefix(self, prefix: str) -> str:
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def read_bytes(self, key: str, *, retry: RetryPolicy | None = None) -> bytes:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> bytes:
            response = self._client(policy).get_object(Bucket=self.bucket_name, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return body.read()

        return self._call("read", self.url_for(key), policy, op)

    def write_bytes(self, key: str, data: bytes, *, retry: RetryPolicy | None = None) -> None:
        full = self._full_key(key)
        data = self._check_data(data)
        policy = retry or self.retry
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"

        def op() -> None:
            self._client(policy).put_object(
                Bucket=self.bucket_name, Key=full, Body=data, ContentType=content_type
            )

        self._call("write", self.url_for(key), policy, op)

    def read_versioned(self, key: str, *, retry: RetryPolicy | None = None) -> tuple[bytes, str]:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> tuple[bytes, str]:
            response = self._client(policy).get_object(Bucket=self.bucket_name, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return body.read(), str(response["ETag"])

        return self._call("read", self.url_for(key), policy, op)

    def _write_if(
        self, key: str, data: bytes, version: str | None, *, retry: RetryPolicy | None
    ) -> str:
        full = self._full_key(key)
        policy = retry or self.retry
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}

        def op() -> str:
            from botocore.exceptions import ClientError

            try:
                response = self._client(policy).put_object(
                    Bucket=self.bucket_name, Key=full, Body=data, ContentType=content_type,
                    **condition,
                )
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise PreconditionFailed(precondition_message(
                        self.url_for(key), version, "another")) from None
                if code in ("NoSuchKey", "404") and version is not None:
                    raise PreconditionFailed(
                        precondition_message(self.url_for(key), version, None)) from None
                raise
            return str(response["ETag"])

        return self._call("write", self.url_for(key), policy, op)

    def list_keys(self, prefix: str = "", *, retry: RetryPolicy | None = None) -> list[str]:
        return sorted(self.list_versions(prefix, retry=retry))

    def list_versions(self, prefix: str = "", *,
                      retry: RetryPolicy | None = None) -> dict[str, str]:
        """One ListObjectsV2 per 1,000 keys; each key's ETag (as GetObject gives it)."""
        full_prefix = self._list_prefix(self._check_prefix(prefix))
        strip = len(self.prefix) + 1 if self.prefix else 0
        policy = retry or self.retry

        def op() -> dict[str, str]:
            client = self._client(policy)
            out: dict[str, str] = {}
            kwargs: dict[str, Any] = {"Bucket": self.bucket_name, "Prefix": full_prefix}
            while True:
                response = client.list_objects_v2(**kwargs)
                out.update((item["Key"][strip:], str(item.get("ETag", "")))
                           for item in response.get("Contents", ()))
                if not response.get("IsTruncated"):
                    return out
                kwargs["ContinuationToken"] = response["NextContinuationToken"]

        return self._call("list", self.url_for(prefix) if prefix else self.url, policy, op)

    def cache_identity(self) -> str:
        """The endpoint (one bucket name on two S3 servers is two buckets)."""
        return f"s3 {self._client(self.retry).meta.endpoint_url}"

    def exists(self, key: str, *, retry: RetryPolicy | None = None) -> bool:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> bool:
            from botocore.exceptions import ClientError

            try:
                self._client(policy).head_object(Bucket=self.bucket_name, Key=full)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return False
                raise
            return True

        return self._call("check", self.url_for(key), policy, op)

    def delete(self, key: str, *, retry: RetryPolicy | None = None) -> None:
        full = self._full_key(key)
        policy = retry or self.retry

        def op() -> None:
            self._client(policy).delete_object(Bucket=self.bucket_name, Key=full)

        self._call("delete", self.url_for(key), policy, op)

    def check_access(self, *, retry: RetryPolicy | None = None) -> None:
        policy = retry or self.retry
        full_prefix = self._list_prefix("")

        def op() -> None:
            self._client(policy).list_objects_v2(
                Bucket=self.bucket_name, Prefix=full_prefix, MaxKeys=1
            )

        self._call("access", self.url, policy, op)

    # -- error handling -------------------------------------------------------------------

    def _endpoint_text(self) -> str:
        return self._endpoint or s3_endpoint_setting()

    def _translate(self, exc: Exception, op: str, target: str) -> StorageError:
        from botocore import exceptions as bx

        if isinstance(exc, bx.NoCredentialsError):
            return StorageError(f"no AWS credentials found for {self.url}: {_AWS_CREDENTIALS_HINT}")
        if isinstance(exc, bx.PartialCredentialsError):
            return StorageError(
                f"incomplete AWS credentials for {self.url} ({one_line(exc)}): "
                f"{_AWS_CREDENTIALS_HINT}"
            )
        if isinstance(exc, bx.ProfileNotFound):
            return StorageError(
                f"AWS profile {os.environ.get('AWS_PROFILE', '?')!r} (AWS_PROFILE) not found, "
                f"needed for {self.url}: run `aws configure --profile NAME` or fix AWS_PROFILE"
            )
        if isinstance(
            exc, (bx.CredentialRetrievalError, bx.TokenRetrievalError, bx.SSOError)
        ) or type(exc).__name__.endswith("TokenError"):
            return StorageError(
                f"could not load AWS credentials for {self.url} ({type(exc).__name__}): "
                f"run `aws sso login` if you use SSO, or {_AWS_CREDENTIALS_HINT}"
            )
        if isinstance(exc, bx.SSLError):
            return StorageError(
                f"TLS error talking to S3 at {self._endpoint_text()} for {target}: "
                f"{one_line(exc)}; check AWS_CA_BUNDLE and the endpoint URL"
            )
        if isinstance(exc, bx.ClientError):
            return self._translate_client_error(exc, op, target)
        return StorageError(f"S3 error while {doing(op, target)}: {one_line(exc)}")

    def _translate_client_error(self, exc: Any, op: str, target: str) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound") and op == "read":
            return ObjectNotFound(f"{target}: no such object")
        if code == "NoSuchBucket":
            return StorageError(
                f"S3 bucket {self.bucket_name!r} does not exist ({self.url} at "
                f"{self._endpoint_text()}): create it (`aws s3 mb s3://{self.bucket_name}`) "
                "or fix the URL"
            )
        if code in _S3_BAD_CREDENTIAL_CODES:
            return StorageError(
                f"S3 rejected the AWS credentials for {self.url} ({code}): the access key or "
                f"secret is wrong or expired; {_AWS_CREDENTIALS_HINT}"
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return StorageError(
                f"S3 denied {doing(op, target)} ({code if code.isalpha() else 'HTTP 403'}): "
                "the credentials are wrong or "
                f"lack permission; grant s3:ListBucket, s3:GetObject, s3:PutObject and "
                f"s3:DeleteObject on {self.bucket_name}, or {_AWS_CREDENTIALS_HINT}"
            )
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
            return StorageError(
                f"S3 bucket {self.bucket_name!r} is in another region ({code}): set "
                "AWS_DEFAULT_REGION (or the profile's region) to the bucket's region"
            )
        message = " ".join(str(error.get("Message", "")).split())
        detail = f": {message}" if message else ""
        code = code or "error"
        return StorageError(
            f"S3 error while {doing(op, target)}: {code} (HTTP {status}){detail}"
        )

    def _give_up(
        self, exc: Exception, op: str, target: str, attempts: int, elapsed: float
    ) -> StorageError:
        from botocore import exceptions as bx

        tries = f"{attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.0f} s"
        if isinstance(exc, bx.ClientError):
            base = self._translate_client_error(exc, op, target)
            return StorageError(f"{base} ({tries}); the service is overloaded, try again later")
        return StorageError(
            f"cannot reach S3 at {self._endpoint_text()} while {doing(op, target)} ({tries}; "
            "last error: "
            f"{one_line(exc, 160)}): check the network and AWS_ENDPOINT_URL, or try again later"
        )


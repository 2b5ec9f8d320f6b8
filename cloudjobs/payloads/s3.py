"""The S3 payload store: bodies written with server-side encryption (SSE-S3, or SSE-KMS with a key),
read back by pointer. boto3 is imported when the client is first needed, so the Lambda import path
stays lean."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from cloudjobs.aws_errors import error_code, setup_error, setup_errors
from cloudjobs.errors import PayloadMissingError, PayloadStoreError
from cloudjobs.payloads.pointer import Pointer

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

_MISSING: Final = frozenset({"NoSuchKey", "NoSuchBucket", "404"})


class S3PayloadStore:
    """Bodies in one S3 bucket (``CLOUDJOBS_PAYLOAD_BUCKET``).

    Args:
        bucket: the bucket bodies are written to (pointers to other buckets are read too).
        kms_key_id: encrypt with this KMS key (SSE-KMS); default SSE-S3.
        client: a boto3 S3 client (default: built on first use).
        region: the client's region (default: boto3's, then ``AWS_REGION``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        kms_key_id: str | None = None,
        client: S3Client | None = None,
        region: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.kms_key_id = kms_key_id
        self._client = client
        self._region = region

    @property
    def client(self) -> S3Client:
        """The boto3 client, built on first use."""
        if self._client is None:
            from cloudjobs.aws_clients import create_client

            self._client = create_client("s3", region=self._region)
        return self._client

    def put(self, key: str, body: bytes) -> Pointer:
        """Write ``body`` under ``key``, encrypted at rest.

        Raises:
            PayloadStoreError: S3 refused or could not be reached.
        """
        encryption: dict[str, Any] = {"ServerSideEncryption": "AES256"}
        if self.kms_key_id:
            encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **encryption)
        except Exception as exc:
            raise self._error(exc, "storing", self.bucket, key) from exc
        return Pointer(self.bucket, key)

    def get(self, pointer: Pointer) -> bytes:
        """The body at ``pointer``.

        Raises:
            PayloadMissingError: no such object (or bucket).
            PayloadStoreError: S3 refused or could not be reached.
        """
        try:
            answer = self.client.get_object(Bucket=pointer.bucket, Key=pointer.key)
            return answer["Body"].read()
        except Exception as exc:
            raise self._error(exc, "reading", pointer.bucket, pointer.key) from exc

    def delete(self, pointer: Pointer) -> None:
        """Delete the object at ``pointer`` (S3 answers the same whether it existed or not).

        Raises:
            PayloadStoreError: S3 refused or could not be reached.
        """
        try:
            self.client.delete_object(Bucket=pointer.bucket, Key=pointer.key)
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return
            raise self._error(exc, "deleting", pointer.bucket, pointer.key) from exc

    @staticmethod
    def _error(exc: Exception, doing: str, bucket: str, key: str) -> Exception:
        if isinstance(exc, setup_errors()):
            return setup_error(exc)
        code = error_code(exc)
        if code in _MISSING:
            return PayloadMissingError(
                f"no stored body at s3://{bucket}/{key} ({code})", bucket=bucket, key=key, code=code
            )
        return PayloadStoreError(
            f"S3: {doing} s3://{bucket}/{key} failed: {exc}", bucket=bucket, key=key, code=code
        )

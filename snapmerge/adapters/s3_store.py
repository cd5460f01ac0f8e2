"""The :class:`~snapmerge.ports.BlobStore` port on a boto3 S3 client.

Error translation (the only place botocore's exceptions are seen):

- a refused precondition on ``put`` — 412 ``PreconditionFailed``, 409
  ``ConditionalRequestConflict`` (S3's answer to two conditional writes racing on one key), or a
  404 on an ``If-Match`` write (the object was deleted since we read it) — becomes
  :class:`~snapmerge.errors.PointerConflictError`;
- anything else (throttling past retries, no bucket, no access, a missing key on download)
  becomes :class:`~snapmerge.errors.StoreError` naming the key.

ETags are returned exactly as S3 sends them (quoted) so a value read by ``get`` can be passed
back to ``put(if_match=...)`` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from snapmerge import aws
from snapmerge.errors import PointerConflictError, StoreError
from snapmerge.ports import Blob

_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DELETE_BATCH = 1000  # the DeleteObjects limit


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3BlobStore:
    """One S3 bucket. ``page_size`` bounds each ``ListObjectsV2`` page (tests use a small one)."""

    def __init__(self, bucket: str, client: Any | None = None, *, page_size: int = 1000) -> None:
        self.bucket = bucket
        self._client = client if client is not None else aws.client("s3")
        self._page_size = page_size

    def get(self, key: str) -> Blob | None:
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=key)
            body: bytes = reply["Body"].read()
        except ClientError as exc:
            if aws.error_code(exc) in _MISSING_CODES:
                return None
            raise StoreError(f"get s3://{self.bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"get s3://{self.bucket}/{key} failed: {exc}") from exc
        return Blob(body=body, etag=str(reply["ETag"]), metadata=dict(reply.get("Metadata", {})))

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if metadata:
            kwargs["Metadata"] = dict(metadata)
        try:
            reply = self._client.put_object(**kwargs)
        except ClientError as exc:
            code, conditional = aws.error_code(exc), if_match is not None or if_none_match
            lost = code in _CONFLICT_CODES or _status(exc) in (409, 412)
            vanished = if_match is not None and code in _MISSING_CODES
            if conditional and (lost or vanished):
                raise PointerConflictError(key, expected=if_match or "*") from exc
            raise StoreError(f"put s3://{self.bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"put s3://{self.bucket}/{key} failed: {exc}") from exc
        return str(reply["ETag"])

    def upload_file(self, key: str, path: Path) -> None:
        """Managed transfer: multipart above the SDK's threshold (the ETag is then not an MD5)."""
        try:
            self._client.upload_file(str(path), self.bucket, key)
        except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:
            raise StoreError(f"upload {path} to s3://{self.bucket}/{key} failed: {exc}") from exc

    def download_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        """A managed transfer; ``progress`` is its Callback (an exception from it aborts the
        transfer, which removes its temporary file, and propagates unchanged)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(self.bucket, key, str(path), Callback=progress)
        except ClientError as exc:
            if aws.error_code(exc) in _MISSING_CODES:
                raise StoreError(f"s3://{self.bucket}/{key} does not exist") from exc
            raise StoreError(f"download s3://{self.bucket}/{key} failed: {exc}") from exc
        except (BotoCoreError, Boto3Error, OSError) as exc:
            raise StoreError(f"download s3://{self.bucket}/{key} failed: {exc}") from exc

    def list_etags(self, prefix: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self._page_size}
        )
        try:
            for page in pages:
                items = page.get("Contents", [])
                found.extend((str(item["Key"]), str(item.get("ETag", ""))) for item in items)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"list s3://{self.bucket}/{prefix} failed: {exc}") from exc
        return sorted(found)

    def list(self, prefix: str) -> list[str]:
        return [key for key, _ in self.list_etags(prefix)]

    def delete(self, keys: Sequence[str]) -> None:
        """Delete in batches of 1000; a key that is already gone is not an error."""
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            objects = [{"Key": key} for key in batch]
            try:
                reply = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise StoreError(f"delete from s3://{self.bucket} failed at {batch[0]}") from exc
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                raise StoreError(
                    f"delete s3://{self.bucket}/{first.get('Key')} failed: {first.get('Code')}"
                    f" ({len(errors)} keys not deleted)"
                )

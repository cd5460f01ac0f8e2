"""One small S3 object read and written whole, conditionally (a flag document, say).

Where :class:`~snapmerge.adapters.s3_store.S3BlobStore` serves many keys, this serves one, with
what a polled document needs: a conditional GET (``If-None-Match`` on the ETag we hold, so an
unchanged object costs a 304 and no body), a content type, and a HEAD.

Errors: a missing object on :meth:`S3Object.read` is
:class:`~snapmerge.errors.MissingResourceError`; a refused condition on :meth:`S3Object.write`
(412 ``PreconditionFailed``, 409 ``ConditionalRequestConflict``) is
:class:`~snapmerge.errors.PointerConflictError`; anything else the SDK raises is
:class:`~snapmerge.errors.StoreError` with the AWS code.
"""

from __future__ import annotations

from typing import Any, Final

from snapmerge import aws
from snapmerge.adapters.aws_errors import SDK_ERRORS, error_code, http_status, translate
from snapmerge.errors import MissingResourceError, PointerConflictError
from snapmerge.ports import Blob

_CONFLICT_CODES: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_NOT_MODIFIED: Final = frozenset({"304", "NotModified"})


class S3Object:
    def __init__(self, bucket: str, key: str, client: Any | None = None) -> None:
        self.bucket, self.key = bucket, key
        self._client = client if client is not None else aws.client("s3")

    def __repr__(self) -> str:
        return f"S3Object('s3://{self.bucket}/{self.key}')"

    def read(self) -> Blob:
        blob = self._get({})
        assert blob is not None  # only a conditional GET answers 304
        return blob

    def read_if_changed(self, etag: str) -> Blob | None:
        """The object, or None when its ETag is still ``etag`` (S3 answered 304, no body)."""
        return self._get({"IfNoneMatch": etag})

    def _get(self, condition: dict[str, str]) -> Blob | None:
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=self.key, **condition)
            body: bytes = reply["Body"].read()
        except SDK_ERRORS as exc:
            if condition and (http_status(exc) == 304 or error_code(exc) in _NOT_MODIFIED):
                return None
            raise translate(exc, f"GetObject {self!r}") from exc
        return Blob(body=body, etag=str(reply["ETag"]), metadata=dict(reply.get("Metadata", {})))

    def write(
        self, body: bytes, *, if_match: str | None = None, content_type: str | None = None
    ) -> str:
        """Put ``body`` if the object's ETag is ``if_match``, or, with ``if_match=None``, only if
        there is no object yet (``If-None-Match: *``). Return the new ETag."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Body": body}
        if content_type is not None:
            kwargs["ContentType"] = content_type
        if if_match is None:
            kwargs["IfNoneMatch"] = "*"
        else:
            kwargs["IfMatch"] = if_match
        try:
            return str(self._client.put_object(**kwargs)["ETag"])
        except SDK_ERRORS as exc:
            if http_status(exc) in (409, 412) or error_code(exc) in _CONFLICT_CODES:
                raise PointerConflictError(self.key, expected=if_match or "*") from exc
            raise translate(exc, f"PutObject {self!r}") from exc

    def etag(self) -> str | None:
        """The current ETag (a HEAD), or None when there is no object."""
        try:
            return str(self._client.head_object(Bucket=self.bucket, Key=self.key)["ETag"])
        except SDK_ERRORS as exc:
            error = translate(exc, f"HeadObject {self!r}")
            if isinstance(error, MissingResourceError):
                return None
            raise error from exc

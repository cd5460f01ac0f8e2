"""Flag stores on AWS: an S3 object, an SSM parameter, an AppConfig profile (read only).

Clients come from :func:`snapmerge.aws.client` (so ``AWS_ENDPOINT_URL`` points them at the
embedded server) or are injected; boto3 is never imported here. Library exceptions are translated:
a read failure is :class:`~snapmerge.errors.StoreError`, a lost conditional save is
:class:`~snapmerge.errors.FlagDocumentConflictError`.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Final

from flags.document import (
    FlagDocumentError,
    content_version,
    decode_document,
    encode_document,
    validate_document,
)
from snapmerge import aws
from snapmerge.errors import FlagDocumentConflictError, StoreError


class ReadOnlyStoreError(StoreError):
    """A save on a store we only read (AppConfig: deploying is AppConfig's job)."""


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


class S3Store:
    """One S3 object. ``load`` is a conditional GET (``If-None-Match`` on the cached ETag), so an
    unchanged document costs a 304 and no body. ``save`` is a conditional PUT: ``If-Match`` the
    expected ETag, or ``If-None-Match: *`` to create."""

    default_ttls: Final = (30.0, 5.0)

    def __init__(self, bucket: str, key: str, client: Any = None) -> None:
        self.bucket = bucket
        self.key = key
        self._client = client if client is not None else aws.client("s3")
        self._cached: tuple[dict[str, Any], str] | None = None

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.key}')"

    def load(self) -> tuple[dict[str, Any], str]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self._cached:
            kwargs["IfNoneMatch"] = self._cached[1]
        try:
            response = self._client.get_object(**kwargs)
            body = response["Body"].read()
        except Exception as exc:
            code, status = _error_code(exc)
            if self._cached and (status == 304 or code in ("304", "NotModified")):
                return copy.deepcopy(self._cached[0]), self._cached[1]
            raise StoreError(f"{self!r}: cannot read flag document: {code or exc!r}") from None
        etag = str(response["ETag"])
        self._cached = (decode_document(body, etag), etag)
        return copy.deepcopy(self._cached[0]), etag

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        validate_document(doc)
        body = encode_document(doc)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key,
            "Body": body,
            "ContentType": "application/json",
        }
        if expected_version is None:
            kwargs["IfNoneMatch"] = "*"
        else:
            kwargs["IfMatch"] = expected_version
        try:
            return str(self._client.put_object(**kwargs)["ETag"])
        except Exception as exc:
            code, status = _error_code(exc)
            if status not in (409, 412) and code not in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise StoreError(f"{self!r}: cannot save flag document: {code or exc!r}") from None
            landed = self._our_write_landed(body)
            if landed is not None:  # the SDK retried a PUT whose first reply was lost
                return landed
            raise FlagDocumentConflictError(repr(self), expected_version, landed) from None

    def _our_write_landed(self, body: bytes) -> str | None:
        """The current ETag if it is the MD5 of ``body`` (a single-part PUT of our bytes)."""
        try:
            etag = str(self._client.head_object(Bucket=self.bucket, Key=self.key)["ETag"])
        except Exception:
            return None
        return (
            etag
            if etag.strip('"') == hashlib.md5(body, usedforsecurity=False).hexdigest()
            else None
        )


class SSMStore:
    """One SSM String parameter; the version is the parameter's ``Version``.

    SSM has no compare-and-swap. ``save`` reads the version, refuses if it is not the expected one,
    then puts with ``Overwrite`` (or without it, to create, which *is* atomic) and reads back the
    version the put produced: versions rise by exactly one per write, so anything but
    ``expected + 1`` means another writer got in between our check and our put. That writer's
    document or ours was overwritten; the race is detected (``FlagDocumentConflictError``), not
    prevented, and the caller must re-read and re-apply. The window is one GetParameter →
    PutParameter round trip. Documents are stored compact (the standard tier holds 4 KB).
    """

    default_ttls: Final = (30.0, 5.0)

    def __init__(self, name: str, client: Any = None) -> None:
        self.name = name
        self._client = client if client is not None else aws.client("ssm")
        self._cached: tuple[dict[str, Any], str] | None = None

    def __repr__(self) -> str:
        return f"SSMStore({self.name!r})"

    def _get(self) -> dict[str, Any] | None:
        try:
            return dict(self._client.get_parameter(Name=self.name)["Parameter"])
        except Exception as exc:
            code, _ = _error_code(exc)
            if code == "ParameterNotFound":
                return None
            raise StoreError(f"{self!r}: cannot read flag document: {code or exc!r}") from None

    def load(self) -> tuple[dict[str, Any], str]:
        parameter = self._get()
        if parameter is None:
            raise StoreError(f"{self!r}: parameter does not exist")
        version = str(parameter["Version"])
        if not self._cached or self._cached[1] != version:
            self._cached = (decode_document(parameter["Value"], version), version)
        return copy.deepcopy(self._cached[0]), version

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        validate_document(doc)
        value = encode_document(doc, compact=True).decode()
        current = self._get()
        current_version = None if current is None else str(current["Version"])
        if current_version != expected_version:
            raise FlagDocumentConflictError(repr(self), expected_version, current_version)
        try:
            put = self._client.put_parameter(
                Name=self.name, Value=value, Type="String", Overwrite=expected_version is not None
            )
        except Exception as exc:
            code, _ = _error_code(exc)
            if code == "ParameterAlreadyExists":
                raise FlagDocumentConflictError(repr(self), None, "created concurrently") from None
            raise StoreError(f"{self!r}: cannot save flag document: {code or exc!r}") from None
        written = int(put["Version"])
        if written != (0 if expected_version is None else int(expected_version)) + 1:
            raise FlagDocumentConflictError(repr(self), expected_version, str(written))
        return str(written)


class AppConfigFlagStore:
    """An AppConfig freeform JSON profile read through Powertools' ``AppConfigStore``.

    Read only: publishing a document is an AppConfig deployment (hosted configuration version +
    deployment strategy), which this code does not do. The version is the sha256 of the document.
    Powertools' own cache is disabled (``max_age=0``); the provider's TTL decides how often we poll.
    AppConfig refuses polls within a session's minimum poll interval, hence the 60 s defaults.
    """

    default_ttls: Final = (60.0, 60.0)

    def __init__(
        self,
        application: str,
        environment: str,
        profile: str,
        *,
        client: Any = None,
        envelope: str = "",
    ) -> None:
        from aws_lambda_powertools.utilities.feature_flags import AppConfigStore

        self.where = f"{application}/{environment}/{profile}"
        self._store = AppConfigStore(
            environment=environment,
            application=application,
            name=profile,
            max_age=0,
            envelope=envelope,
            boto3_client=client if client is not None else aws.client("appconfigdata"),
        )

    def __repr__(self) -> str:
        return f"AppConfigFlagStore({self.where!r})"

    def load(self) -> tuple[dict[str, Any], str]:
        try:
            doc = self._store.get_configuration()
        except Exception as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else ""
            if cause == "TransformParameterError":
                raise FlagDocumentError(f"{self!r}: flag document is not JSON") from None
            raise StoreError(f"{self!r}: cannot read flag document: {exc}") from None
        if not isinstance(doc, dict):
            raise FlagDocumentError(f"{self!r}: flag document is not an object")
        return copy.deepcopy(doc), content_version(doc)

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        raise ReadOnlyStoreError(
            f"{self!r} is read only: publish flag changes as an AppConfig deployment "
            "(create-hosted-configuration-version, then start-deployment)"
        )

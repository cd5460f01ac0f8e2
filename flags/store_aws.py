"""Flag stores on AWS: an S3 object, an SSM parameter, an AppConfig profile (read only).

Each store talks to AWS through an adapter of :mod:`snapmerge.adapters` (which takes an injected
client or builds one from the environment, so ``AWS_ENDPOINT_URL`` points it at the embedded
server) and sees only the project's errors: a read failure is
:class:`~snapmerge.errors.StoreError` (:class:`~snapmerge.errors.MissingResourceError` when there
is no document), a lost conditional save is :class:`~snapmerge.errors.FlagDocumentConflictError`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Final

from flags.document import (
    FlagDocumentError,
    content_version,
    decode_document,
    encode_document,
    validate_document,
)
from snapmerge.adapters.s3_object import S3Object
from snapmerge.adapters.ssm_parameters import Parameter, SsmParameters
from snapmerge.errors import (
    ConditionFailedError,
    FlagDocumentConflictError,
    MissingResourceError,
    PointerConflictError,
    StoreError,
)


class ReadOnlyStoreError(StoreError):
    """A save on a store we only read (AppConfig: deploying is AppConfig's job)."""


def _failed(store: object, doing: str, exc: StoreError) -> StoreError:
    """The adapter's error again, of the same class, saying which flag store and what failed."""
    error = MissingResourceError if isinstance(exc, MissingResourceError) else StoreError
    return error(f"{store!r}: cannot {doing} flag document: {exc.code or exc}", code=exc.code)


class S3Store:
    """One S3 object. ``load`` is a conditional GET (``If-None-Match`` on the cached ETag), so an
    unchanged document costs a 304 and no body. ``save`` is a conditional PUT: ``If-Match`` the
    expected ETag, or ``If-None-Match: *`` to create."""

    default_ttls: Final = (30.0, 5.0)

    def __init__(self, bucket: str, key: str, client: Any = None) -> None:
        self.bucket = bucket
        self.key = key
        self._object = S3Object(bucket, key, client)
        self._cached: tuple[dict[str, Any], str] | None = None

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.key}')"

    def load(self) -> tuple[dict[str, Any], str]:
        try:
            if self._cached:
                blob = self._object.read_if_changed(self._cached[1])
                if blob is None:  # 304: unchanged, no body sent
                    return copy.deepcopy(self._cached[0]), self._cached[1]
            else:
                blob = self._object.read()
        except StoreError as exc:
            raise _failed(self, "read", exc) from exc
        self._cached = (decode_document(blob.body, blob.etag), blob.etag)
        return copy.deepcopy(self._cached[0]), blob.etag

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        validate_document(doc)
        body = encode_document(doc)
        try:
            return self._object.write(
                body, if_match=expected_version, content_type="application/json"
            )
        except PointerConflictError:
            landed = self._our_write_landed(body)
            if landed is not None:  # the SDK retried a PUT whose first reply was lost
                return landed
            raise FlagDocumentConflictError(repr(self), expected_version, landed) from None
        except StoreError as exc:
            raise _failed(self, "save", exc) from exc

    def _our_write_landed(self, body: bytes) -> str | None:
        """The current ETag if it is the MD5 of ``body`` (a single-part PUT of our bytes)."""
        try:
            etag = self._object.etag()
        except StoreError:
            return None
        if etag is None:
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
        self._parameters = SsmParameters(client)
        self._cached: tuple[dict[str, Any], str] | None = None

    def __repr__(self) -> str:
        return f"SSMStore({self.name!r})"

    def _get(self) -> Parameter | None:
        try:
            return self._parameters.get(self.name)
        except StoreError as exc:
            raise _failed(self, "read", exc) from exc

    def load(self) -> tuple[dict[str, Any], str]:
        parameter = self._get()
        if parameter is None:
            raise MissingResourceError(f"{self!r}: parameter does not exist")
        version = str(parameter.version)
        if not self._cached or self._cached[1] != version:
            self._cached = (decode_document(parameter.value, version), version)
        return copy.deepcopy(self._cached[0]), version

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        validate_document(doc)
        value = encode_document(doc, compact=True).decode()
        current = self._get()
        current_version = None if current is None else str(current.version)
        if current_version != expected_version:
            raise FlagDocumentConflictError(repr(self), expected_version, current_version)
        try:
            written = self._parameters.put(self.name, value, overwrite=expected_version is not None)
        except ConditionFailedError:
            raise FlagDocumentConflictError(repr(self), None, "created concurrently") from None
        except StoreError as exc:
            raise _failed(self, "save", exc) from exc
        if written != (0 if expected_version is None else int(expected_version)) + 1:
            raise FlagDocumentConflictError(repr(self), expected_version, str(written))
        return str(written)


class AppConfigFlagStore:
    """An AppConfig freeform JSON profile, polled through Powertools' ``AppConfigProvider``
    (:class:`~snapmerge.adapters.appconfig.AppConfigProfile`).

    Read only: publishing a document is an AppConfig deployment (hosted configuration version +
    deployment strategy), which this code does not do. The version is the sha256 of the document.
    Powertools' own cache is disabled (``max_age=0``); the provider's TTL decides how often we poll.
    AppConfig refuses polls within a session's minimum poll interval, hence the 60 s defaults.
    ``envelope`` is a JMESPath expression selecting the document inside the profile's JSON.
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
        from snapmerge.adapters.appconfig import AppConfigProfile  # Powertools: only when asked

        self.where = f"{application}/{environment}/{profile}"
        self.envelope = envelope
        self._profile = AppConfigProfile(application, environment, profile, client)

    def __repr__(self) -> str:
        return f"AppConfigFlagStore({self.where!r})"

    def load(self) -> tuple[dict[str, Any], str]:
        try:
            raw = self._profile.latest()
        except StoreError as exc:
            raise _failed(self, "read", exc) from exc
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise FlagDocumentError(f"{self!r}: flag document is not JSON") from None
        if self.envelope:
            from aws_lambda_powertools.utilities.jmespath_utils import query

            doc = query(data=doc, envelope=self.envelope)
        if not isinstance(doc, dict):
            raise FlagDocumentError(f"{self!r}: flag document is not an object")
        return copy.deepcopy(doc), content_version(doc)

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        raise ReadOnlyStoreError(
            f"{self!r} is read only: publish flag changes as an AppConfig deployment "
            "(create-hosted-configuration-version, then start-deployment)"
        )

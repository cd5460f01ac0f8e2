"""Reading botocore's exceptions, for the adapters that translate them (nobody else sees them).

:func:`translate` is the common case: an SDK exception becomes :class:`StoreError` (or
:class:`MissingResourceError` when its code says the resource is absent) naming the call and
carrying the code; the adapter handles the codes that mean something else (a refused condition)
before calling it.
"""

from __future__ import annotations

from typing import Final

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from snapmerge import aws
from snapmerge.errors import MissingResourceError, StoreError

SDK_ERRORS: Final = (ClientError, BotoCoreError, Boto3Error)

MISSING_CODES: Final = frozenset(
    {"ResourceNotFoundException", "ParameterNotFound", "NoSuchKey", "NotFound", "404"}
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError``; the exception's class name otherwise."""
    if isinstance(exc, ClientError):
        return aws.error_code(exc) or "ClientError"
    return type(exc).__name__


def http_status(exc: BaseException) -> int:
    if not isinstance(exc, ClientError):
        return 0
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate(exc: BaseException, what: str) -> StoreError:
    """The project error for an SDK exception raised by ``what`` (say ``"GetParameter 'x'"``)."""
    code = error_code(exc)
    if code in MISSING_CODES:
        return MissingResourceError(f"{what}: does not exist ({code})", code=code)
    return StoreError(f"{what} failed: {code}: {exc}", code=code)

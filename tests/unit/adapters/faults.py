"""Making a real boto3 client fail the way AWS does, for the adapters' error-translation tests.

:func:`refusing` wraps a client made for the embedded server in botocore's ``Stubber`` with one
queued error: the request is validated against the service model exactly as a real call is, and
the reply is the ``ClientError`` AWS sends. :class:`Unreachable` raises botocore's connection
error, which no reply can model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from snapmerge import aws


@contextmanager
def refusing(
    service: str, operation: str, code: str, status: int = 400, client: Any = None
) -> Iterator[Any]:
    """A client of ``service`` whose next ``operation`` is answered with AWS error ``code``."""
    client = client if client is not None else aws.client(service)
    stub = Stubber(client)
    stub.add_client_error(operation, service_error_code=code, http_status_code=status)
    with stub:
        yield client
    stub.assert_no_pending_responses()  # the error was served: the fault fired


class Unreachable:
    """A client whose every call fails to connect (what a down endpoint or no network gives)."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

        return call


class Buggy:
    """A client whose every call raises a plain programming error (not the SDK's)."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise KeyError("a bug, not an AWS failure")

        return call
